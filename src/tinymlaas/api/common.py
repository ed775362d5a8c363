"""Pieces shared by the routers: documented error responses, file downloads and JSON sent
straight from pydantic."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Response
from fastapi.responses import FileResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from tinymlaas.api.schemas import ErrorBody
from tinymlaas.domain import Artifact, ArtifactKind
from tinymlaas.service.workspace import Workspace

__all__ = ["AUTH_ERRORS", "DATASET_DOWNLOAD", "DOWNLOAD", "ERRORS", "JSON_ERRORS", "MEDIA_TYPES",
           "MODEL_DOWNLOAD", "ZIP_DOWNLOAD", "artifact_response", "download", "errors",
           "json_response", "store_read"]

T = TypeVar("T")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


#: ``AUTH_ERRORS`` for a route whose own responses are not JSON (FastAPI would document
#: its errors in the route's media type): the errors are JSON whatever the route sends.
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": "An error.", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for code in (400, 401, 403, 404, 409, 422, 500)}

#: Errors any route may answer with.
ERRORS = errors(400, 404, 422, 500)
#: ... and those of routes behind a token.
AUTH_ERRORS = errors(400, 401, 403, 404, 409, 422, 500)

MEDIA_TYPES = {
    ArtifactKind.onnx: "application/onnx",
    ArtifactKind.torch_exported: "application/zip",
    ArtifactKind.torchscript: "application/zip",
    ArtifactKind.c_source: "application/zip",
    ArtifactKind.bundle_zip: "application/zip",
    ArtifactKind.docker_context: "application/zip",
    ArtifactKind.c_bundle: "application/zip",
    ArtifactKind.signed_image: "application/zip",
    ArtifactKind.python_wheel: "application/zip",
    ArtifactKind.dataset_npz: "application/zip",
    ArtifactKind.report: "application/json",
    ArtifactKind.outputs_npy: "application/octet-stream",
    ArtifactKind.file: "application/octet-stream",
}

_BINARY = {"type": "string", "format": "binary"}


def download(*kinds: ArtifactKind,
             description: str = "The file.") -> dict[int | str, dict[str, Any]]:
    """OpenAPI description of a 200 that sends the blob of one of ``kinds`` (each media type
    it may be sent as, from :data:`MEDIA_TYPES`)."""
    content: dict[str, dict[str, Any]] = {}
    for media_type in sorted({MEDIA_TYPES.get(kind, "application/octet-stream")
                              for kind in kinds}):
        content[media_type] = {"schema": (
            {"type": "object", "description": "A JSON report."}
            if media_type == "application/json" else dict(_BINARY))}
    headers = {"X-Content-SHA256": {"description": "sha256 (hex) of the file.",
                                    "schema": {"type": "string"}}}
    return {200: {"content": content, "description": description, "headers": headers}}


#: A registered model's file: ONNX, or a zip (torch.export .pt2, TorchScript).
MODEL_DOWNLOAD = download(ArtifactKind.onnx, ArtifactKind.torch_exported,
                          ArtifactKind.torchscript, description="The model file.")
#: A dataset's canonical .npz (a zip of X and y).
DATASET_DOWNLOAD = download(ArtifactKind.dataset_npz, description="The dataset as an .npz.")
#: Any artifact of a run.
DOWNLOAD = download(*MEDIA_TYPES, ArtifactKind.file, description="The artifact.")
#: A zip (a run's export).
ZIP_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": dict(_BINARY)}}, "description": "A zip."}}


def artifact_response(artifact: Artifact, path: Path, filename: str | None = None) -> FileResponse:
    """The blob as an attachment with its content type and file name."""
    return FileResponse(path, media_type=MEDIA_TYPES.get(artifact.kind, "application/octet-stream"),
                        filename=filename or artifact.filename,
                        headers={"X-Content-SHA256": artifact.sha256})


@lru_cache(maxsize=32)
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


async def store_read(ws: Workspace, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``read(*args, **kwargs)``, a short read of the store for an ``async`` route: on the
    event loop when the database is embedded (SQLite: CPU work that takes less time than
    the two hops to the thread pool and back, about 0.2 ms of CPU each, that a plain
    ``def`` route costs), in the thread pool when it is a server (a wait on the network
    would hold up every other request of the process)."""
    if ws.services.meta.embedded:
        return read(*args, **kwargs)
    return await run_in_threadpool(read, *args, **kwargs)


def json_response(schema: Any, value: Any, headers: dict[str, str] | None = None) -> Response:
    """``value`` validated as ``schema`` and sent as the JSON bytes pydantic writes: what
    FastAPI does with a ``response_model`` (which the route still declares, for the
    OpenAPI document), without its detour through Python dicts and, in an ``async`` route,
    without the thread-pool hop it takes to validate the result of a plain ``def`` route.
    The most requested reads (``GET /runs/{ref}``, ``GET /runs``) are ``async`` routes that
    send their result with it, read through :func:`store_read`.
    """
    adapter = _adapter(schema)
    return Response(adapter.dump_json(adapter.validate_python(value)),
                    media_type="application/json", headers=headers)
