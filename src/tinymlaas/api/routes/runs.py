"""Runs: create (queued at once), cancel, resubmit, inspect, compare, download, and follow
live through server-sent events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from tinymlaas.api.common import (
    AUTH_ERRORS,
    DOWNLOAD,
    JSON_ERRORS,
    ZIP_DOWNLOAD,
    json_response,
    store_read,
)
from tinymlaas.api.deps import StudioDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.responses import (
    run_artifact_response,
    run_events_response,
    run_export_response,
)
from tinymlaas.api.schemas import (
    ArtifactPublic,
    CompareRequest,
    ComparisonPublic,
    DeletionPublic,
    LayerPublic,
    RunCreate,
    RunMetrics,
    RunPublic,
    StepLogPublic,
)
from tinymlaas.domain import RunStatus
from tinymlaas.domain.entities import MAX_STEPS
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.service.pipelines import parse_pipeline

router = APIRouter(prefix="/runs", tags=["runs"], responses=AUTH_ERRORS)


@router.get("", response_model=list[RunPublic], responses=PAGED)
async def list_runs(ws: WorkspaceDep, paging: PagingDep,
                    project: Annotated[str | None, Query()] = None,
                    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
                    ) -> object:
    """Runs in the user's projects, newest first, a page at a time."""
    page = await store_read(ws, ws.page_runs, paging.limit, paging.after, project,
                            status_filter.value if status_filter else None)
    return paging.json(page, list[RunPublic])


@router.post("", response_model=RunPublic, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, ws: WorkspaceDep, studio: StudioDep) -> object:
    """Validate a pipeline (inline or a template) against its inputs and queue the run."""
    if body.template is not None:
        pipeline = parse_pipeline(ws.get_template(body.template,
                                                  ws.project_id(body.project)).pipeline,
                                  f"template {body.template}")
    else:
        assert body.pipeline is not None  # RunCreate holds exactly one of the two
        pipeline = parse_pipeline(body.pipeline.as_dict(), "pipeline")
    run = ws.create_run(pipeline, model=body.model, dataset=body.dataset, device=body.device,
                        name=body.name, project=body.project, site=body.site)
    studio.runs.submit_run(run)
    return run


@router.post("/compare", response_model=list[ComparisonPublic])
def compare_runs(body: CompareRequest, ws: WorkspaceDep) -> object:
    """Side by side: accuracy and its change, size and latency ratios, memory."""
    return ws.compare(body.runs, body.reference)


@router.get("/{ref}", response_model=RunPublic)
async def get_run(ref: str, ws: WorkspaceDep) -> object:
    """A run with its steps' status, timing, errors and metrics."""
    return json_response(RunPublic, await store_read(ws, ws.get_run, ref, logs=False))


@router.delete("/{ref}", response_model=DeletionPublic)
def delete_run(ref: str, ws: WorkspaceDep) -> object:
    """Delete a finished run (409 while it is queued or running: cancel it first); the
    artifacts that only it used are freed."""
    return ws.delete_run(ref)


@router.post("/{ref}/submit", response_model=RunPublic, status_code=status.HTTP_202_ACCEPTED)
def submit_run(ref: str, ws: WorkspaceDep, studio: StudioDep) -> object:
    """Queue a failed or cancelled run again; finished steps come from the cache."""
    run = ws.runnable_run(ref)
    studio.runs.submit_run(run)
    return run


@router.post("/{ref}/cancel", response_model=RunPublic, status_code=status.HTTP_202_ACCEPTED)
def cancel_run(ref: str, ws: WorkspaceDep, studio: StudioDep) -> object:
    """Stop a queued or running run (its current step's process is killed)."""
    run = ws.writable_run(ref)
    studio.runs.cancel_run(run)
    return ws.get_run(run.id)


@router.post("/{ref}/rerun", response_model=RunPublic, status_code=status.HTTP_201_CREATED)
def rerun(ref: str, ws: WorkspaceDep, studio: StudioDep) -> object:
    """A new run of the same pipeline and inputs, queued at once."""
    run = ws.rerun(ref)
    studio.runs.submit_run(run)
    return run


@router.get("/{ref}/logs", response_model=list[StepLogPublic], responses=PAGED)
def run_logs(ref: str, ws: WorkspaceDep, paging: PagingDep) -> object:
    """The steps' logs, in step order."""
    return paging.of(ws.get_run(ref).steps, lambda step: (f"{step.index:06d}",))


@router.get("/{ref}/steps/{index}/log", response_class=PlainTextResponse,
            responses={**JSON_ERRORS, 200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "The step's log."}})
def step_log(ref: str, index: Annotated[int, PathParam(ge=0, lt=MAX_STEPS)],
             ws: WorkspaceDep) -> PlainTextResponse:
    """One step's log as text (steps count from 0)."""
    run = ws.get_run(ref)
    if not 0 <= index < len(run.steps):
        raise NotFoundError(f"run {run.id} has no step {index}; it has {len(run.steps)}",
                            {"kind": "step"})
    return PlainTextResponse(run.steps[index].log)


@router.get("/{ref}/metrics", response_model=RunMetrics)
def run_metrics(ref: str, ws: WorkspaceDep) -> object:
    """Baseline and result metrics, and each step's own metrics."""
    run = ws.get_run(ref)
    return RunMetrics(run_id=run.id, status=run.status, baseline=run.baseline,
                      result=run.result,
                      steps=[{"index": s.index, "transformer": s.transformer,
                              "status": s.status.value, "duration_s": s.duration_s,
                              "metrics": s.metrics} for s in run.steps])


@router.get("/{ref}/artifacts", response_model=list[ArtifactPublic], responses=PAGED)
def run_artifacts(ref: str, ws: WorkspaceDep, paging: PagingDep) -> object:
    """The run's input model, each step's output and its final output, in that order."""
    found = list(enumerate(ws.run_artifacts(ref)))
    return [item for _, item in paging.of(found, lambda pair: (f"{pair[0]:06d}",))]


@router.get("/{ref}/artifacts/{sha}", response_class=FileResponse, responses=DOWNLOAD)
def download_artifact(ref: str, sha: str, ws: WorkspaceDep) -> FileResponse:
    """One of the run's artifacts (by sha256 or a prefix of at least 8 characters)."""
    return run_artifact_response(ws, ref, sha)


@router.get("/{ref}/output", response_class=FileResponse, responses=DOWNLOAD)
def download_output(ref: str, ws: WorkspaceDep) -> FileResponse:
    """The run's output (the optimized model or package)."""
    return run_artifact_response(ws, ref)


@router.get("/{ref}/export", response_class=FileResponse,
            responses=ZIP_DOWNLOAD)
def export_run(ref: str, ws: WorkspaceDep) -> FileResponse:
    """A zip of the output, metrics.json, pipeline.yaml and lineage.json."""
    return run_export_response(ws, ref)


@router.get("/{ref}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description":
                             "event: run (a RunPublic snapshot, first and last), "
                             "event: progress (a RunEventPublic), event: end."}})
async def run_events(ref: str, ws: WorkspaceDep, studio: StudioDep) -> StreamingResponse:
    """Live progress as server-sent events.

    The stream opens with the run's current state (so a late client sees what already
    happened), then one ``progress`` event per step or evaluation update, and closes with
    the final ``run`` state and an ``end`` event once the run has finished.
    """
    return await run_events_response(ws, ref, studio)


@router.get("/{ref}/layers", response_model=list[LayerPublic],
            responses={**PAGED, 409: JSON_ERRORS[409]})
def run_layers(ref: str, ws: WorkspaceDep, paging: PagingDep) -> object:
    """The compiler's per-layer profile of the run's model, a page at a time: one row per
    kernel call in execution order (nodes, MACs, live arena bytes, flash bytes).

    The model is the run's ONNX output, or what its ``compile-c`` step compiled, with that
    step's options. 409 when the run has no such model or the compiler cannot lower it.
    """
    rows = ws.run_layers(ref)
    if rows is None:
        raise ConflictError(f"run {ref} has no per-layer profile: it has no output yet, or "
                            "its output is neither ONNX nor generated C, or the compiler "
                            "cannot lower its model")
    return paging.of([LayerPublic.model_validate(r) for r in rows],
                     lambda r: (f"{r.step:08d}",))
