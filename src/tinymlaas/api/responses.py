"""HTTP responses that the API routes and the web pages both send: a run's live event
stream and its downloads. Each takes the user's workspace, so it sees only what they may."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from tinymlaas.api.common import artifact_response
from tinymlaas.api.deps import Studio
from tinymlaas.api.runtime import DONE, TERMINAL, Subscription
from tinymlaas.api.schemas import RunEventPublic, RunPublic
from tinymlaas.domain import Run
from tinymlaas.service.workspace import Workspace

__all__ = ["KEEPALIVE_S", "model_file_response", "run_artifact_response",
           "run_events_response", "run_export_response"]

#: Seconds between keep-alive comments (and database checks) on a quiet event stream.
KEEPALIVE_S = 5.0


def model_file_response(ws: Workspace, ref: str) -> FileResponse:
    """The registered model file, named after the model."""
    artifact, path = ws.model_file(ref)
    return artifact_response(artifact, path)


def run_artifact_response(ws: Workspace, ref: str, sha: str | None = None) -> FileResponse:
    """One of the run's artifacts (default: its output), named after the run."""
    run = ws.get_run(ref)
    artifact, path = ws.run_artifact(run.id, sha)
    return artifact_response(artifact, path, f"{run.name}-{artifact.filename}")


def run_export_response(ws: Workspace, ref: str) -> FileResponse:
    """A zip of the output, metrics.json, pipeline.yaml and lineage.json."""
    run = ws.get_run(ref)
    tmp = Path(tempfile.mkdtemp(prefix="tinymlaas-export-"))
    try:
        files = ws.export_run(run.id, tmp / "export")
        archive = tmp / f"{run.name}-{run.id}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/zip", filename=archive.name,
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


def _run_json(run: Run) -> str:
    return RunPublic.model_validate(run.model_dump()).model_dump_json()


async def run_events_response(ws: Workspace, ref: str, studio: Studio) -> StreamingResponse:
    """Live progress as server-sent events.

    The stream opens with the run's current state (so a late client sees what already
    happened), then one ``progress`` event per step or evaluation update, and closes with
    the final ``run`` state and an ``end`` event once the run has finished.
    """
    run = await run_in_threadpool(ws.get_run, ref)
    subscription = studio.bus.subscribe(run.id)  # before the snapshot: no update is missed

    async def stream(sub: Subscription) -> AsyncIterator[str]:
        try:
            current = await run_in_threadpool(studio.services.get_run, run.id)
            yield _sse("run", _run_json(current))
            while current.status not in TERMINAL or studio.runs.is_queued(run.id):
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    current = await run_in_threadpool(studio.services.get_run, run.id)
                    yield ": keep-alive\n\n"
                    continue
                if event.stage == DONE:
                    break
                yield _sse("progress", RunEventPublic(
                    run_id=event.run_id, stage=event.stage, status=event.status,
                    progress=event.progress, message=event.message,
                    data=json.loads(json.dumps(event.data, default=str))).model_dump_json())
            final = await run_in_threadpool(studio.services.get_run, run.id)
            yield _sse("run", _run_json(final))
            yield _sse("end", json.dumps({"run_id": run.id, "status": final.status.value}))
        finally:
            studio.bus.unsubscribe(sub)

    return StreamingResponse(stream(subscription), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
