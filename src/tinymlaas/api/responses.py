"""HTTP responses that the API routes and the web pages both send: a run's live event
stream (and the follower of any event on the bus, which searches use too) and its downloads.
Each takes the user's workspace, so it sees only what they may."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from tinymlaas.api.common import artifact_response
from tinymlaas.api.deps import Studio
from tinymlaas.api.runtime import DONE, TERMINAL, Subscription
from tinymlaas.api.schemas import RunEventPublic, RunPublic
from tinymlaas.domain import Run
from tinymlaas.engine import RunEvent
from tinymlaas.service.workspace import Workspace

__all__ = ["KEEPALIVE_S", "event_stream", "model_file_response", "run_artifact_response",
           "run_events_response", "run_export_response"]

#: Seconds between keep-alive comments (and database checks) on a quiet event stream.
KEEPALIVE_S = 5.0
T = TypeVar("T")


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


def event_stream(studio: Studio, key: str, read: Callable[[], T],
                 ended: Callable[[T], bool], document: tuple[str, Callable[[T], str]],
                 render: Callable[[RunEvent], tuple[str, str] | None],
                 end: Callable[[T], dict[str, Any]]) -> StreamingResponse:
    """Server-sent events of what the bus publishes under ``key``.

    The stream opens with the current ``document`` (so a late client sees what already
    happened), then one event per published event that ``render`` names (``None`` skips it),
    re-reading the document at every keep-alive, and closes with the final document and an
    ``end`` event once ``ended`` holds or the bus says ``done``.
    """
    name, dump = document
    subscription = studio.bus.subscribe(key)  # before the snapshot: no update is missed

    async def stream(sub: Subscription) -> AsyncIterator[str]:
        try:
            current = await run_in_threadpool(read)
            yield _sse(name, dump(current))
            while not ended(current):
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    current = await run_in_threadpool(read)
                    yield ": keep-alive\n\n"
                    continue
                if event.stage == DONE:
                    break
                if (shown := render(event)) is not None:
                    yield _sse(*shown)
            final = await run_in_threadpool(read)
            yield _sse(name, dump(final))
            yield _sse("end", json.dumps(end(final)))
        finally:
            studio.bus.unsubscribe(sub)

    return StreamingResponse(stream(subscription), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def run_events_response(ws: Workspace, ref: str, studio: Studio) -> StreamingResponse:
    """Live progress as server-sent events: the run's current state, one ``progress`` event
    per step or evaluation update, then the final ``run`` state and an ``end`` event once
    the run has finished."""
    run_id = (await run_in_threadpool(ws.get_run, ref)).id

    def progress(event: RunEvent) -> tuple[str, str]:
        return "progress", RunEventPublic(
            run_id=event.run_id, stage=event.stage, status=event.status,
            progress=event.progress, message=event.message,
            data=json.loads(json.dumps(event.data, default=str))).model_dump_json()

    return event_stream(
        studio, run_id, lambda: studio.services.get_run(run_id),
        lambda run: run.status in TERMINAL and not studio.runs.is_queued(run_id),
        ("run", _run_json), progress,
        lambda run: {"run_id": run_id, "status": run.status.value})
