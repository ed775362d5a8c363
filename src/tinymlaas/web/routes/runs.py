"""Runs: the new-run form (template or step builder), the run page with live progress,
its downloads, and cancel / rerun."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from tinymlaas.api.deps import StudioDep
from tinymlaas.api.responses import (
    run_artifact_response,
    run_events_response,
    run_export_response,
)
from tinymlaas.domain import Run
from tinymlaas.errors import InvalidInputError, NotFoundError, TinymlaasError
from tinymlaas.service.fleet import FleetView
from tinymlaas.service.pipelines import parse_pipeline
from tinymlaas.templates import default_template
from tinymlaas.web.charts import layers_figure
from tinymlaas.web.forms import (
    FIDELITY_FIELDS,
    StepErrors,
    param_fields,
    parse_fidelity,
    parse_steps,
    step_errors,
)
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf
from tinymlaas.web.views import run_row

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)
MAX_NAME = 100


def _form_page(request: Request, viewer: Viewer, project_id: str, studio: StudioDep,
               form: dict[str, Any], errors: StepErrors | None = None,
               status_code: int = 200) -> Response:
    ws = viewer.workspace
    project = ws.get_project(project_id)
    transformers = [t for t in ws.list_transformers() if t.external is None
                    or t.external.project in ws.projects]
    models = ws.list_models(project.id)
    return render(request, "run_new.html", {
        "project": project, "models": models,
        "datasets": ws.list_datasets(project.id),
        "devices": studio.services.list_devices({project.id}),
        "templates": ws.list_templates(), "transformers": transformers,
        "fields": {t.name: param_fields(t.params_schema) for t in transformers},
        "fidelity_fields": FIDELITY_FIELDS, "default_templates": {
            m.id: default_template(m.kind.value) for m in models},
        "form": form, "errors": errors}, viewer=viewer, status_code=status_code)


@router.get("/projects/{project_id}/runs/new")
def new_run_page(request: Request, project_id: str, viewer: WebSession, studio: StudioDep,
                 model: Annotated[str, Query(max_length=100)] = "",
                 template: Annotated[str, Query(max_length=100)] = "") -> Response:
    """The form, ``?model=`` chosen, on ``?template=`` or else the platform's default int8
    for the model's format (auto-int8; export-onnx first for a PyTorch model)."""
    ws = viewer.workspace
    project = ws.get_project(project_id)
    chosen = next((m for m in ws.list_models(project.id) if m.id == model), None)
    names = {t.name for t in ws.list_templates()}
    default = default_template(chosen.kind.value if chosen else "onnx")
    form = {"mode": "template", "model": chosen.id if chosen else "",
            "template": template if template in names else default, "steps_json": "[]",
            "evaluate": True}
    return _form_page(request, viewer, project.id, studio, form)


@router.post("/projects/{project_id}/runs")
def create_run(request: Request, project_id: str, viewer: WebSession, studio: StudioDep,
               name: Annotated[str, Form()] = "", model: Annotated[str, Form()] = "",
               dataset: Annotated[str, Form()] = "", device: Annotated[str, Form()] = "",
               mode: Annotated[str, Form()] = "template",
               template: Annotated[str, Form()] = "",
               steps_json: Annotated[str, Form()] = "[]",
               evaluate: Annotated[str | None, Form()] = None,
               fidelity_max_accuracy_drop: Annotated[str, Form(max_length=40)] = "",
               fidelity_min_cosine: Annotated[str, Form(max_length=40)] = "",
               fidelity_min_snr_db: Annotated[str, Form(max_length=40)] = "",
               fidelity_max_mae_increase_pct: Annotated[str, Form(max_length=40)] = "",
               fidelity_max_auc_drop: Annotated[str, Form(max_length=40)] = "",
               csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    ws = viewer.workspace
    project = ws.get_project(project_id)
    fidelity_texts = {
        "fidelity_max_accuracy_drop": fidelity_max_accuracy_drop,
        "fidelity_min_cosine": fidelity_min_cosine, "fidelity_min_snr_db": fidelity_min_snr_db,
        "fidelity_max_mae_increase_pct": fidelity_max_mae_increase_pct,
        "fidelity_max_auc_drop": fidelity_max_auc_drop}
    form = {"name": name, "model": model, "dataset": dataset, "device": device,
            "mode": mode, "template": template, "steps_json": steps_json,
            "evaluate": evaluate is not None, "fidelity": fidelity_texts}
    try:
        if not model:
            raise InvalidInputError("pick the model to compress", {"field": "model"})
        if not dataset:
            raise InvalidInputError("pick the dataset to calibrate and evaluate on",
                                    {"field": "dataset"})
        if mode == "steps":
            pipeline = parse_pipeline({"name": "custom", "steps": parse_steps(steps_json),
                                       "evaluate": evaluate is not None}, "pipeline")
        else:
            if not template:
                raise InvalidInputError("pick a template", {"field": "template"})
            pipeline = parse_pipeline(ws.get_template(template, project.id).pipeline,
                                      f"template {template}")
            pipeline = pipeline.model_copy(update={"evaluate": evaluate is not None})
        fidelity = parse_fidelity(fidelity_texts)
        if fidelity is not None:  # else the pipeline's own gate, or the defaults
            pipeline = pipeline.model_copy(update={"fidelity": fidelity})
        run = ws.create_run(pipeline, model=model, dataset=dataset, device=device or None,
                            name=name.strip()[:MAX_NAME] or None, project=project.id)
        studio.runs.submit_run(run)
    except TinymlaasError as exc:
        if isinstance(exc, NotFoundError) and (exc.details or {}).get("kind") == "project":
            raise
        return _form_page(request, viewer, project.id, studio, form, step_errors(exc),
                          status_code=exc.http_status)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.post("/runs/{ref}/device-inference")
def run_on_device(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
                  device: Annotated[str, Form(max_length=100)] = "",
                  limit: Annotated[str, Form(max_length=20)] = "100",
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    """Send the run's test split to a device running a release of the run; the device's
    page shows the job, and this page its figures once the device has answered."""
    check_csrf(request, csrf_token)
    run = viewer.workspace.get_run(ref)
    try:
        if run.dataset_id is None:
            raise InvalidInputError("this run has no dataset to send")
        try:
            count = int(limit.strip() or "100")
        except ValueError:
            raise InvalidInputError(f"samples must be a whole number, not {limit!r}") from None
        fleet = FleetView(studio.fleet, viewer.workspace)
        job = fleet.inference(device, run.dataset_id, count)
    except TinymlaasError as exc:
        context = _run_context(viewer, run.id, studio)
        return render(request, "run.html", {**context, "error": exc.message}, viewer=viewer,
                      status_code=exc.http_status)
    return RedirectResponse(f"/fleet/devices/{job.device_id}?queued={job.id}#job-{job.id}",
                            status_code=303)


def _device_jobs(fleet: FleetView, run: Run) -> list[dict[str, Any]]:
    """What devices measured running releases made from ``run`` (newest first)."""
    jobs = fleet.fleet.jobs_for_run(run)
    if not jobs:
        return []
    names = fleet.device_names(run.project)
    return [{"job": j, "device": names.get(j.device_id, j.device_id)} for j in jobs]


def _run_context(viewer: Viewer, ref: str, studio: StudioDep) -> dict[str, Any]:
    ws = viewer.workspace
    run = ws.get_run(ref)
    model = ws.get_model(run.model_id)
    dataset = ws.get_dataset(run.dataset_id) if run.dataset_id else None
    artifacts = ws.run_artifacts(run.id) if run.output_sha else []
    packages = ws.run_packages(run.id)
    role = ws.store.role_of(run.project, viewer.user.id)
    layers = ws.run_layers(run.id)
    fleet = FleetView(studio.fleet, ws)
    return {"run": run, "row": run_row(run, {model.id: model.name}), "model": model,
            "layers": layers, "layers_figure": layers_figure(layers) if layers else None,
            "dataset": dataset, "artifacts": artifacts, "packages": packages,
            "project": ws.get_project(run.project), "can_write": role in {"owner", "editor"},
            "device_jobs": _device_jobs(fleet, run),
            "run_devices": fleet.devices_running(run)
            if role in {"owner", "editor"} and dataset is not None else []}


@router.get("/runs/{ref}")
def run_page(request: Request, ref: str, viewer: WebSession, studio: StudioDep) -> Response:
    return render(request, "run.html", _run_context(viewer, ref, studio), viewer=viewer)


@router.get("/runs/{ref}/body")
def run_body(request: Request, ref: str, viewer: WebSession, studio: StudioDep) -> Response:
    """The steps, metrics and downloads, for the page to swap in when the run ends."""
    return render(request, "_run_body.html", _run_context(viewer, ref, studio),
                  viewer=viewer)


@router.get("/runs/{ref}/events")
async def run_events(ref: str, viewer: WebSession, studio: StudioDep) -> StreamingResponse:
    """The API's live event stream, authenticated by the session cookie."""
    return await run_events_response(viewer.workspace, ref, studio)


@router.get("/runs/{ref}/output")
def download_output(ref: str, viewer: WebSession) -> FileResponse:
    return run_artifact_response(viewer.workspace, ref)


@router.get("/runs/{ref}/artifacts/{sha}")
def download_artifact(ref: str, sha: str, viewer: WebSession) -> FileResponse:
    return run_artifact_response(viewer.workspace, ref, sha)


@router.get("/runs/{ref}/export")
def export_run(ref: str, viewer: WebSession) -> FileResponse:
    return run_export_response(viewer.workspace, ref)


@router.post("/runs/{ref}/cancel")
def cancel_run(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
               csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    studio.runs.cancel_run(viewer.workspace.writable_run(ref))
    return RedirectResponse(f"/runs/{ref}", status_code=303)


@router.post("/runs/{ref}/rerun")
def rerun(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
          csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    run = viewer.workspace.rerun(ref)
    studio.runs.submit_run(run)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
