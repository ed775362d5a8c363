"""Content-addressed blobs behind expiring signed URLs (:mod:`tinymlaas.service.blobs`):
the way a site's workers, which hold no user token, fetch a step's inputs and upload its
outputs. ``GET`` answers ``Range`` requests (206) so a broken download resumes; ``PUT``
streams the body to a temporary file with a size limit and stores it only when its sha256
is the URL's address."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from tinymlaas.api.common import errors
from tinymlaas.api.deps import StudioDep
from tinymlaas.api.site_schemas import BlobStored
from tinymlaas.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from tinymlaas.service.blobs import BlobSigner

__all__ = ["router"]

router = APIRouter(prefix="/blobs", tags=["blobs"])

Expires = Annotated[int, Query(ge=0, le=2**40, description="Unix time the URL expires at.")]
Signature = Annotated[str, Query(pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256, hex.")]
Method = Annotated[str | None, Query(pattern=r"^(GET|PUT)$",
                                     description="What the URL allows (informative).")]
_BINARY = {200: {"content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}, "description": "The blob."},
    206: {"content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}},
        "description": "The requested range of the blob."}}


def _check(studio: StudioDep, sha256: str, method: str, expires: int, sig: str) -> None:
    BlobSigner.for_home(studio.settings.home).verify(sha256, method, expires, sig)


@router.get("/{sha256}", response_class=FileResponse,
            responses={**_BINARY, **errors(403, 404, 416, 422, 500)})
def get_blob(request: Request, studio: StudioDep, expires: Expires, sig: Signature,
             sha256: str, method: Method = None) -> FileResponse:
    """The blob's bytes (``Range: bytes=N-`` for the rest of a broken download). ``HEAD``
    with the same URL says whether the blob is stored (200 or 404, no body)."""
    return _blob(request, studio, expires, sig, sha256)


@router.head("/{sha256}", include_in_schema=False)
def head_blob(request: Request, studio: StudioDep, expires: Expires, sig: Signature,
              sha256: str, method: Method = None) -> FileResponse:
    return _blob(request, studio, expires, sig, sha256)


def _blob(request: Request, studio: StudioDep, expires: int, sig: str,
          sha256: str) -> FileResponse:
    if not _valid_sha(sha256):
        raise NotFoundError(f"{sha256!r} is not a blob address")
    _check(studio, sha256, request.method, expires, sig)
    store = studio.services.artifacts
    if not store.exists(sha256):
        raise NotFoundError(f"blob {sha256[:12]} is not stored", {"kind": "blob"})
    return FileResponse(store.path(sha256), media_type="application/octet-stream",
                        headers={"X-Content-SHA256": sha256})


@router.put("/{sha256}", response_model=BlobStored, status_code=status.HTTP_201_CREATED,
            responses=errors(400, 403, 404, 413, 422, 500),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def put_blob(request: Request, studio: StudioDep, expires: Expires, sig: Signature,
                   sha256: str, method: Method = None) -> BlobStored:
    """Store the body under its sha256, which must be the URL's address (else 400)."""
    if not _valid_sha(sha256):
        raise NotFoundError(f"{sha256!r} is not a blob address")
    _check(studio, sha256, "PUT", expires, sig)
    limit = studio.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the blob is larger than the limit of {limit} bytes",
                                   {"limit_bytes": limit})
    store = studio.services.artifacts
    fd, name = tempfile.mkstemp(dir=store.root, prefix=".incoming-")
    tmp = Path(name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLargeError(
                            f"the blob is larger than the limit of {limit} bytes",
                            {"limit_bytes": limit})
                    digest.update(chunk)
                    out.write(chunk)
            except ClientDisconnect:
                raise InvalidInputError("the upload was interrupted; nothing was stored") \
                    from None
            out.flush()
            os.fsync(out.fileno())
        received = digest.hexdigest()
        if received != sha256:
            raise InvalidInputError("the body's sha256 is not the URL's address; nothing "
                                    "was stored", {"expected": sha256, "received": received})
        await run_in_threadpool(store.adopt, tmp, sha256)
    finally:
        tmp.unlink(missing_ok=True)
    return BlobStored(sha256=sha256, size=size)


def _valid_sha(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
