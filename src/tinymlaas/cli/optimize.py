"""``tinymlaas optimize`` and ``tinymlaas searches``: search compression pipelines within an
accuracy budget, here (in this process) or on a server (``--server``), and list, show or
cancel searches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeGuard, cast

import typer

from tinymlaas.cli.render import console, fmt, human_bytes, print_json, status, table
from tinymlaas.domain.searches import Candidate, Search, SearchState
from tinymlaas.errors import InvalidInputError

if TYPE_CHECKING:
    from tinymlaas.cli.remote import RemoteServices
    from tinymlaas.service import Services

__all__ = ["optimize_command", "render_result", "searches_app"]

searches_app = typer.Typer(no_args_is_help=True, help="Searches (optimize): list, show, "
                           "cancel.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _objective(candidate: Candidate, objective: str) -> str:
    if candidate.objective is None:
        return "-"
    if objective == "latency":
        return fmt(candidate.objective, ".3f", " ms")
    return human_bytes(candidate.objective)


def _quality(candidate: Candidate) -> str:
    """The candidate's primary metric in its unit (an accuracy in %, a mean cosine, ...)."""
    from tinymlaas.domain.quality import PRIMARY_METRICS

    metric = next((m for m in PRIMARY_METRICS.values() if m.key == candidate.quality_metric),
                  None)
    if metric is None:  # a search recorded before the task metrics
        return fmt(candidate.accuracy, ".2f", "%")
    return metric.format(candidate.quality)


def _drop(candidate: Candidate) -> str:
    if candidate.accuracy_drop is None:
        return "-"
    digits = 2 if candidate.quality_metric in (None, "accuracy") else 4
    return f"{-candidate.accuracy_drop:+.{digits}f}"


def _budget_text(result: Any) -> str:
    """The quality budget in words: ``max accuracy drop 1.0``, ``budget cosine=0.01``."""
    metric = getattr(result, "quality_metric", None)
    if metric is not None and metric != "accuracy":  # an OptimizeResult
        return f"quality budget {metric} {result.quality_budget:g}"
    if getattr(result, "quality_budget", None) and isinstance(result.quality_budget, str):
        return f"quality budget {result.quality_budget}"
    return f"max accuracy drop {result.max_accuracy_drop}"


def render_result(result: Any) -> None:
    """The candidates table, then the recommendation or the sensitivity report (of a
    :class:`Search` or an ``OptimizeResult``)."""
    base_size = result.baseline.get("file_bytes")
    rows = []
    for c in sorted(result.candidates, key=lambda c: (c.objective is None, c.objective or 0)):
        mark = ("★ " if c.run_id == result.recommended else "") + \
            ("P" if c.run_id in result.pareto else "")
        rows.append([mark, c.run_id, " → ".join(c.steps), status(c.status),
                     _quality(c), _drop(c),
                     human_bytes(c.file_bytes),
                     fmt(base_size / c.file_bytes if base_size and c.file_bytes else None,
                         ".2f", "x"),
                     fmt(c.latency_ms, ".3f"), human_bytes(c.arena_bytes),
                     _objective(c, result.objective),
                     "yes" if c.feasible else "; ".join(c.violations) or (c.error or "no")])
    model = getattr(result, "model_name", None) or result.model
    dataset = getattr(result, "dataset_name", None) or result.dataset
    elapsed = f", {result.elapsed_s:.0f} s" if result.elapsed_s is not None else ""
    console.print(table(
        f"optimize {model} on {dataset}: objective {result.objective}, "
        f"{_budget_text(result)}"
        + (f", device {result.device}" if result.device else "")
        + f" ({len(result.candidates)} candidates{elapsed}; ★ recommended, P Pareto)",
        ["", "run", "steps", "status", "quality", "Δ", "size", "size ×", "p50 ms",
         "arena", result.objective, "meets limits"], rows))
    console.print(result.message, highlight=False)
    if result.sensitivity:
        from tinymlaas.domain.quality import PRIMARY_METRICS

        metrics = {m.key: m for m in PRIMARY_METRICS.values()}
        metric = metrics[result.sensitivity[0].metric]
        console.print(table(
            "Per-layer sensitivity (each layer compressed alone, no fine-tuning)",
            ["layer", "probe", metric.label, "drop", "advice"],
            [[s.layer, s.probe, metrics[s.metric].format(s.value),
              fmt(s.drop, f"+.{metrics[s.metric].digits}f"), s.advice]
             for s in result.sensitivity]))
    if result.recommended:
        console.print(f"Next: `tinymlaas export {result.recommended} --out ./optimized`")


def _show_candidate(candidate: Candidate) -> None:
    console.print(f"  {candidate.run_id}: {' → '.join(candidate.steps)}: {candidate.status}, "
                  f"quality {_quality(candidate)}, size "
                  f"{human_bytes(candidate.file_bytes)}", highlight=False)


def _search(public: Any) -> Search:
    return Search.model_validate(public.model_dump())


def _remote(svc: Any) -> TypeGuard[RemoteServices]:
    from tinymlaas.cli.remote import RemoteServices

    return isinstance(svc, RemoteServices)


def _end(search: Search, as_json: bool) -> None:
    """Print the ended search; exit 6 when it failed or was cancelled."""
    if as_json:
        print_json(search)
    else:
        render_result(search)
    if search.state is not SearchState.succeeded:
        raise typer.Exit(6)


def optimize_command(
    model: Annotated[str, typer.Option(help="Model name or id.")],
    dataset: Annotated[str, typer.Option(help="Dataset name or id.")],
    device: Annotated[str | None, typer.Option(help="Target device: its flash and RAM are "
                                               "hard limits.")] = None,
    max_accuracy_drop: Annotated[float, typer.Option(help="Largest accepted accuracy loss, "
                                                     "in points.")] = 1.0,
    objective: Annotated[str, typer.Option(help="What to minimise: size, latency or ram.")]
    = "size",
    budget: Annotated[list[str] | None, typer.Option(
        help="Repeatable. A search time (90s, 10m, 1h; default 10m, checked between "
        "candidates) or a quality budget in the dataset task's metric, METRIC=VALUE: "
        "accuracy=1 (points), cosine=0.01 (mean cosine drop), mae=0.1, auc=0.02, snr=30 "
        "(floor, dB).")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Exactly this many candidate runs "
                                                   "at most (1 to 200).")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of training steps.")] = 3,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Search compression pipelines; print the Pareto set and the recommended run. With
    --server the server runs the search and this follows it live."""
    from tinymlaas.cli.main import services
    from tinymlaas.optimize import parse_budget
    from tinymlaas.service.searches import parse_request

    durations = [b for b in budget or [] if "=" not in b]
    qualities = [b for b in budget or [] if "=" in b]
    if len(durations) > 1 or len(qualities) > 1:
        raise InvalidInputError("give --budget at most once as a time (10m) and once as a "
                                "quality budget (cosine=0.01)")
    duration = durations[0] if durations else "10m"
    request = parse_request({
        "model": model, "dataset": dataset, "device": device, "objective": objective,
        "max_accuracy_drop": max_accuracy_drop,
        "quality_budget": qualities[0] if qualities else None,
        "time_budget_s": parse_budget(duration),
        "max_trials": max_trials, "epochs": epochs, "seed": seed})
    svc = services()

    def show_state(state: str) -> None:
        if not as_json:
            console.print(f"search {state}")

    if _remote(svc):  # a server runs the search; follow its events
        client = svc.client
        public = client.search(project=project, **request.model_dump())
        if not as_json:
            console.print(f"search {public.id} on the server: up to {duration}"
                          + (f", {max_trials} candidate(s)" if max_trials else ""))

        def on_event(name: str, payload: Any) -> None:
            if as_json:
                return
            if name == "candidate":
                _show_candidate(payload)
            elif name == "state":
                show_state(payload.state.value)

        return _end(_search(client.follow_search(public.id, on_event)), as_json)

    from tinymlaas.service.searches import CANDIDATE, Searches

    searches = Searches(cast("Services", svc))
    search = searches.create(request, project)
    if not as_json:
        console.print(f"search {search.id}: up to {duration}"
                      + (f", {max_trials} candidate(s)" if max_trials else ""))

    def follow(event: Any) -> None:
        if not as_json and event.stage == CANDIDATE:
            _show_candidate(Candidate.model_validate(event.data))

    _end(searches.run(search.id, follow), as_json)


def _backend() -> Any:
    """``(list, get, cancel)`` of searches, here or on the server."""
    from tinymlaas.cli.main import services

    svc = services()
    if _remote(svc):
        client = svc.client
        return (lambda project: [_search(s) for s in client.list_searches(project)],
                lambda ref: _search(client.get_search(ref)),
                lambda ref: _search(client.cancel_search(ref)))
    from tinymlaas.service.searches import Searches

    searches = Searches(cast("Services", svc))
    searches.recover(start_queued=False)  # a search whose `optimize` was stopped ends failed
    return (lambda project: searches.list({project} if project else None),
            searches.get, searches.cancel)


@searches_app.command("list")
def searches_list(project: Annotated[str | None, typer.Option("--project", "-p",
                                                              help="Project id.")] = None,
                  as_json: JsonOpt = False) -> None:
    """List searches, newest first."""
    items = _backend()[0](project)
    if as_json:
        return print_json(items)
    if not items:
        console.print("no searches yet: `tinymlaas optimize --model M --dataset D`")
        return
    console.print(table("Searches", ["id", "state", "model", "dataset", "device", "objective",
                                     "candidates", "recommended", "created"],
                        [[s.id, status(s.state.value), s.model_name, s.dataset_name,
                          s.device or "-", s.objective,
                          f"{len(s.candidates)}" + (f"/{s.max_trials}" if s.max_trials else ""),
                          s.recommended or "-", s.created_at.strftime("%Y-%m-%d %H:%M")]
                         for s in items]))


@searches_app.command("show")
def searches_show(ref: Annotated[str, typer.Argument(help="Search id.")],
                  as_json: JsonOpt = False) -> None:
    """Show a search: its candidates so far and, once ended, its outcome."""
    search = _backend()[1](ref)
    if as_json:
        return print_json(search)
    console.print(f"search {search.id}: {search.state.value}"
                  + (" (cancelling)" if search.cancel_requested and not search.done else ""))
    render_result(search)


@searches_app.command("cancel")
def searches_cancel(ref: Annotated[str, typer.Argument(help="Search id.")],
                    as_json: JsonOpt = False) -> None:
    """Stop a queued or running search; a running one stops its current candidate run
    within seconds and keeps what it found."""
    search = _backend()[2](ref)
    if as_json:
        return print_json(search)
    if search.state is SearchState.cancelled:
        console.print(f"search {search.id}: cancelled")
    else:
        console.print(f"search {search.id}: cancelling (it is {search.state.value}; its "
                      "current candidate run is being stopped)")
