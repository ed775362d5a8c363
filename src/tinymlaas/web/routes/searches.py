"""Searches (``optimize``): the search form, and the search page where the Pareto front
grows as candidates finish, with the candidate table and the recommended run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.api.deps import StudioDep
from tinymlaas.domain import Task
from tinymlaas.domain.quality import PRIMARY_METRICS, PrimaryMetric, primary_metric, task_of
from tinymlaas.domain.searches import MAX_SEARCH_TRIALS, Candidate, Search
from tinymlaas.errors import InvalidInputError, NotFoundError, TinymlaasError
from tinymlaas.optimize import pareto_front, parse_budget
from tinymlaas.service.searches import parse_request
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf

__all__ = ["router", "search_figure"]

router = APIRouter(route_class=WebRoute)

#: Objective -> (candidate field, axis title, scale).
_AXES = {"size": ("file_bytes", "Model size (KiB)", 1 / 1024),
         "latency": ("latency_ms", "Latency p50 (ms)", 1.0),
         "ram": ("ram_bytes", "RAM (KiB)", 1 / 1024)}
_BASELINE = {"size": "file_bytes", "latency": "latency_ms_p50"}


def _quality_metric(search: Search) -> PrimaryMetric:
    """The primary metric the search's candidates are judged by (the dataset task's)."""
    key = next((c.quality_metric for c in search.candidates if c.quality_metric), None)
    found = next((m for m in PRIMARY_METRICS.values() if m.key == key), None)
    if found is not None:
        return found
    return primary_metric(task_of(search.baseline) or Task.classification)


def _axis_title(metric: PrimaryMetric) -> str:
    unit = metric.unit.strip()
    title = metric.label[:1].upper() + metric.label[1:] + (f" ({unit})" if unit else "")
    return title if metric.higher_is_better else f"{title}, lower is better"


def search_figure(search: Search) -> dict[str, Any]:
    """A plotly figure: each measured candidate (the task's primary metric in its own unit,
    e.g. accuracy, mean cosine or MAE, against the objective), the Pareto front of those so
    far, the recommended run and the input model."""
    key, title, scale = _AXES[search.objective]
    metric = _quality_metric(search)

    def quality(c: Candidate) -> float | None:
        if c.quality is not None:
            return float(c.quality)
        # candidates recorded before their quality was: the accuracy is the same figure
        return float(c.accuracy) if metric.key == "accuracy" and c.accuracy is not None \
            else None

    measured = [c for c in search.candidates
                if quality(c) is not None and getattr(c, key) is not None]

    def xy(items: list[Candidate]) -> dict[str, list[float]]:
        return {"x": [float(getattr(c, key)) * scale for c in items],
                "y": [quality(c) for c in items]}  # type: ignore[misc]

    traces: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "markers", "name": "candidates", **xy(measured),
        "text": [f"{c.run_id}: {' → '.join(c.steps)}: {metric.label} "
                 f"{metric.format(quality(c))}" for c in measured],
        "hoverinfo": "text+x", "marker": {"size": 11, "color": "#2563eb"}}]
    front = [c for c in pareto_front(measured) if getattr(c, key) is not None]
    if front:
        traces.append({"type": "scatter", "mode": "lines+markers", "name": "Pareto front",
                       **xy(front), "hoverinfo": "skip",
                       "line": {"color": "#f97316", "dash": "dot", "width": 2},
                       "marker": {"size": 15, "symbol": "circle-open", "color": "#f97316",
                                  "line": {"width": 2}}})
    best = [c for c in measured if c.run_id == search.recommended]
    if best:
        traces.append({"type": "scatter", "mode": "markers", "name": "recommended",
                       **xy(best), "hoverinfo": "skip",
                       "marker": {"size": 16, "symbol": "star", "color": "#16a34a"}})
    base_key = _BASELINE.get(search.objective)
    base = search.baseline
    # the input model against itself: its own accuracy, MAE or AUC; a cosine of 1; an SNR
    # without bound (no point)
    reference = 1.0 if metric.key == "cosine_mean" else None if metric.key == "snr_db" \
        else base.get(metric.key)
    if base_key and base.get(base_key) is not None and isinstance(reference, int | float):
        traces.append({"type": "scatter", "mode": "markers", "name": "input model",
                       "x": [float(base[base_key]) * scale], "y": [float(reference)],
                       "marker": {"size": 12, "symbol": "diamond", "color": "#64748b"}})
    label = metric.label[:1].upper() + metric.label[1:]
    return {"data": traces, "layout": {
        "title": {"text": f"{label} vs {search.objective}"}, "height": 360,
        "margin": {"l": 56, "r": 16, "t": 40, "b": 48},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": {"title": {"text": title}, "zeroline": False},
        "yaxis": {"title": {"text": _axis_title(metric)}}}}


def _form_page(request: Request, viewer: Viewer, project_id: str, studio: StudioDep,
               form: dict[str, Any], error: str | None = None,
               status_code: int = 200) -> Response:
    ws = viewer.workspace
    project = ws.get_project(project_id)
    return render(request, "search_new.html", {
        "project": project, "models": ws.list_models(project.id),
        "datasets": ws.list_datasets(project.id),
        "devices": studio.services.list_devices({project.id}),
        "searches": ws.list_searches(project.id)[:20], "max_trials_limit": MAX_SEARCH_TRIALS,
        "form": form, "error": error}, viewer=viewer, status_code=status_code)


@router.get("/projects/{project_id}/searches/new")
def new_search_page(request: Request, project_id: str, viewer: WebSession,
                    studio: StudioDep) -> Response:
    form = {"objective": "size", "max_accuracy_drop": "1.0", "budget": "10m",
            "max_trials": "10", "epochs": "3"}
    return _form_page(request, viewer, project_id, studio, form)


@router.post("/projects/{project_id}/searches")
def create_search(request: Request, project_id: str, viewer: WebSession, studio: StudioDep,
                  model: Annotated[str, Form()] = "", dataset: Annotated[str, Form()] = "",
                  device: Annotated[str, Form()] = "",
                  objective: Annotated[str, Form()] = "size",
                  max_accuracy_drop: Annotated[str, Form()] = "1.0",
                  quality_budget: Annotated[str, Form()] = "",
                  budget: Annotated[str, Form()] = "10m",
                  max_trials: Annotated[str, Form()] = "",
                  epochs: Annotated[str, Form()] = "3",
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    ws = viewer.workspace
    project = ws.get_project(project_id)
    form = {"model": model, "dataset": dataset, "device": device, "objective": objective,
            "max_accuracy_drop": max_accuracy_drop, "quality_budget": quality_budget,
            "budget": budget, "max_trials": max_trials, "epochs": epochs}
    try:
        if not model:
            raise InvalidInputError("pick the model to compress")
        if not dataset:
            raise InvalidInputError("pick the dataset to measure the candidates on")
        search = ws.create_search(parse_request({
            "model": model, "dataset": dataset, "device": device or None,
            "objective": objective, "max_accuracy_drop": _number(max_accuracy_drop,
                                                                 "accuracy budget"),
            "quality_budget": quality_budget.strip() or None,
            "time_budget_s": parse_budget(budget or "10m"),
            "max_trials": int(_number(max_trials, "max trials")) if max_trials.strip()
            else None, "epochs": int(_number(epochs, "epochs"))}), project.id)
        studio.searches.start(search.id)
    except TinymlaasError as exc:
        if isinstance(exc, NotFoundError) and (exc.details or {}).get("kind") == "project":
            raise
        return _form_page(request, viewer, project.id, studio, form, exc.message,
                          status_code=exc.http_status)
    return RedirectResponse(f"/searches/{search.id}", status_code=303)


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"{what} must be a number, not {text!r}") from None


def _context(viewer: Viewer, ref: str) -> dict[str, Any]:
    ws = viewer.workspace
    search = ws.get_search(ref)
    role = ws.store.role_of(search.project, viewer.user.id)
    front = {c.run_id for c in pareto_front(search.candidates)}
    return {"search": search, "project": ws.get_project(search.project),
            "front": front, "figure": search_figure(search),
            "can_write": role in {"owner", "editor"}}


@router.get("/searches/{ref}")
def search_page(request: Request, ref: str, viewer: WebSession) -> Response:
    return render(request, "search.html", _context(viewer, ref), viewer=viewer)


@router.get("/searches/{ref}/body")
def search_body(request: Request, ref: str, viewer: WebSession) -> Response:
    """The candidates, the figure's data and the outcome, for the page to swap in while the
    search runs."""
    return render(request, "search_body.html", _context(viewer, ref), viewer=viewer)


@router.post("/searches/{ref}/cancel")
def cancel_search(request: Request, ref: str, viewer: WebSession,
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    search = viewer.workspace.cancel_search(ref)
    return RedirectResponse(f"/searches/{search.id}", status_code=303)
