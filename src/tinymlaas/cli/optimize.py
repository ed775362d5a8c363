"""``tinymlaas optimize``: search compression pipelines within an accuracy budget."""

from __future__ import annotations

from typing import Annotated

import typer

from tinymlaas.cli.render import console, fmt, human_bytes, print_json, table
from tinymlaas.errors import InvalidInputError

__all__ = ["optimize_command", "render_result"]


def _objective(candidate, objective: str) -> str:
    if candidate.objective is None:
        return "-"
    if objective == "latency":
        return fmt(candidate.objective, ".3f", " ms")
    return human_bytes(candidate.objective)


def render_result(result) -> None:
    """The candidates table, then the recommendation or the sensitivity report."""
    base_size = result.baseline.get("file_bytes")
    rows = []
    for c in sorted(result.candidates, key=lambda c: (c.objective is None, c.objective or 0)):
        mark = ("★ " if c.run_id == result.recommended else "") + ("P" if c.pareto else "")
        rows.append([mark, c.run_id, " → ".join(c.steps), c.status,
                     fmt(c.accuracy, ".2f", "%"), fmt(-c.accuracy_drop if c.accuracy_drop
                                                      is not None else None, "+.2f"),
                     human_bytes(c.file_bytes),
                     fmt(base_size / c.file_bytes if base_size and c.file_bytes else None,
                         ".2f", "x"),
                     fmt(c.latency_ms, ".3f"), _objective(c, result.objective),
                     "yes" if c.feasible else "; ".join(c.violations) or (c.error or "no")])
    console.print(table(
        f"optimize {result.model} on {result.dataset}: objective {result.objective}, max "
        f"accuracy drop {result.max_accuracy_drop}"
        + (f", device {result.device}" if result.device else "")
        + f" ({len(result.candidates)} candidates, {result.elapsed_s:.0f} s; ★ recommended, "
        "P Pareto)",
        ["", "run", "steps", "status", "accuracy", "Δ acc", "size", "size ×", "p50 ms",
         result.objective, "meets limits"], rows))
    console.print(result.message)
    if result.sensitivity:
        console.print(table(
            "Per-layer sensitivity (each layer compressed alone, no fine-tuning)",
            ["layer", "probe", "accuracy", "drop", "advice"],
            [[s.layer, s.probe, fmt(s.accuracy, ".2f", "%"), fmt(s.drop, "+.2f"), s.advice]
             for s in result.sensitivity]))
    if result.recommended:
        console.print(f"Next: `tinymlaas export {result.recommended} --out ./optimized`")


def optimize_command(
    model: Annotated[str, typer.Option(help="Model name or id.")],
    dataset: Annotated[str, typer.Option(help="Dataset name or id.")],
    device: Annotated[str | None, typer.Option(help="Target device: its flash and RAM are "
                                               "hard limits.")] = None,
    max_accuracy_drop: Annotated[float, typer.Option(help="Largest accepted accuracy loss, "
                                                     "in points.")] = 1.0,
    objective: Annotated[str, typer.Option(help="What to minimise: size, latency or ram.")]
    = "size",
    budget: Annotated[str, typer.Option(help="Search time, e.g. 90s, 10m, 1h (checked "
                                        "between candidates).")] = "10m",
    max_trials: Annotated[int | None, typer.Option(help="Stop after this many "
                                                   "candidates.")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of training steps.")] = 3,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a "
                                          "table.")] = False,
) -> None:
    """Search compression pipelines; print the Pareto set and the recommended run."""
    from tinymlaas.cli.main import services
    from tinymlaas.optimize import optimize

    def show(candidate) -> None:
        if not as_json:
            console.print(f"  {candidate.run_id}: {' → '.join(candidate.steps)}: "
                          f"{candidate.status}, accuracy {fmt(candidate.accuracy, '.2f')}, "
                          f"size {human_bytes(candidate.file_bytes)}")

    svc = services()
    if not hasattr(svc, "artifact_path"):
        # The search reads candidates' files from the stores it runs against; a server
        # keeps them on its own machine. Refused before any run is created.
        raise InvalidInputError(
            "optimize does not work with --server yet: the search reads every candidate's "
            "files from the local stores; run `tinymlaas optimize` on the server's machine "
            "(same --home), or here without --server")
    if not as_json:
        console.print(f"searching for up to {budget}...")
    result = optimize(svc, model, dataset, device=device,
                      objective=objective,  # type: ignore[arg-type]  # checked by optimize
                      max_accuracy_drop=max_accuracy_drop, budget=budget,
                      max_trials=max_trials, epochs=epochs, project=project, seed=seed,
                      on_candidate=show)
    if as_json:
        print_json(result)
    else:
        render_result(result)
