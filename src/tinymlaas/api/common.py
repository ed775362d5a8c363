"""Pieces shared by the routers: documented error responses and file downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse

from tinymlaas.api.schemas import ErrorBody
from tinymlaas.domain import Artifact, ArtifactKind

__all__ = ["AUTH_ERRORS", "ERRORS", "artifact_response"]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


#: Errors any route may answer with.
ERRORS = _errors(400, 404, 422, 500)
#: ... and those of routes behind a token.
AUTH_ERRORS = _errors(400, 401, 403, 404, 409, 422, 500)

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

#: OpenAPI description of a download response.
DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file."}}


def artifact_response(artifact: Artifact, path: Path, filename: str | None = None) -> FileResponse:
    """The blob as an attachment with its content type and file name."""
    return FileResponse(path, media_type=MEDIA_TYPES.get(artifact.kind, "application/octet-stream"),
                        filename=filename or artifact.filename,
                        headers={"X-Content-SHA256": artifact.sha256})
