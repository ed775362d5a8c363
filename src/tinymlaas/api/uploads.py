"""Streaming uploads: the request body goes to a temp file chunk by chunk, hashed on the
way and cut off at a size limit (413), so a large upload never sits in memory.

Two body forms are accepted: the raw file (``application/octet-stream``, file name in the
``filename`` query parameter) or ``multipart/form-data`` with one ``file`` part, a boundary
of 1 to 70 characters (RFC 2046) and its closing boundary: a body that ends before it is
refused, so a truncated file is never registered. The temp file is removed whatever
happens: the client disconnecting, the limit, a bad body, or the caller finishing with it;
:func:`sweep_stale_uploads` removes those a crashed server left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from tinymlaas.errors import InvalidInputError, PayloadTooLargeError, TinymlaasError

__all__ = ["UPLOAD_BODY", "Upload", "receive_upload", "safe_stem", "sweep_stale_uploads"]

_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_MAX_FIELD_BYTES = 64 * 1024
#: RFC 2046: a multipart boundary has 1 to 70 characters.
MAX_BOUNDARY_CHARS = 70
_TEMP_PREFIX = ".upload-"
#: OpenAPI request body of upload routes (FastAPI cannot infer it from a streamed body).
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "sha256": {"type": "string"}}}}}}}


@dataclass
class Upload:
    """A received file: where it is, what the client called it, its sha256 and size."""

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def safe_stem(filename: str, fallback: str) -> str:
    """A registrable name from a client file name (letters, digits, ``._-``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("-._")[:100]
    return stem or fallback


class _Sink:
    """Writes the file's bytes, hashing and counting them."""

    def __init__(self, fh: BinaryIO, max_bytes: int) -> None:
        self.fh = fh
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLargeError(f"upload is larger than the limit of {self.max_bytes} "
                                       "bytes", {"limit_bytes": self.max_bytes})
        self.digest.update(data)
        self.fh.write(data)


class _FormReader:
    """Feeds a multipart body to the streaming parser; the ``file`` part goes to a sink."""

    def __init__(self, boundary: bytes, sink: _Sink) -> None:
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._is_file = False
        self._buffer = bytearray()
        self._field_bytes = 0
        #: The closing boundary was reached: the body is complete.
        self.ended = False
        try:
            self.parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end})
        except Exception as exc:  # the parser refuses some boundaries with its own errors
            raise InvalidInputError(f"unusable multipart boundary: {exc}") from None

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except TinymlaasError:
            raise  # ours, from a callback: the size limit, a second file part, ...
        except MultipartParseError as exc:
            raise InvalidInputError(f"malformed multipart body: {exc}") from None
        except Exception as exc:  # any other parser failure is still a bad body
            raise InvalidInputError(f"malformed multipart body ({type(exc).__name__})") \
                from None

    def _end(self) -> None:
        self.ended = True

    def _part_begin(self) -> None:
        self._headers, self._name, self._is_file = {}, None, False
        self._buffer = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._name == "file":
            if self.filename is not None:
                raise InvalidInputError("send one 'file' part per upload")
            self._is_file = True
            self.filename = (filename or b"upload").decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.sink.write(data[start:end])
            return
        self._field_bytes += end - start
        if self._field_bytes > _MAX_FIELD_BYTES:
            raise InvalidInputError("form fields are too large; only 'file' may be big")
        self._buffer += data[start:end]

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix
    return suffix.lower() if _SUFFIX.match(suffix) else ""


@contextmanager
def _temp_file(directory: Path, suffix: str) -> Iterator[tuple[BinaryIO, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def receive_upload(request: Request, directory: Path, max_bytes: int,
                         filename: str | None = None) -> Upload:
    """Stream the request's file into ``directory``; the caller deletes ``Upload.path``.

    Raises:
        PayloadTooLargeError: over ``max_bytes`` (declared or streamed); nothing is kept.
        InvalidInputError: an empty or malformed body, a checksum mismatch, or a client
            that went away mid-upload; nothing is kept.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLargeError(f"upload is larger than the limit of {max_bytes} bytes",
                                   {"limit_bytes": max_bytes})
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    multipart = content_type == b"multipart/form-data"
    if multipart and not options.get(b"boundary"):
        raise InvalidInputError("multipart body without a boundary")
    if multipart and len(options[b"boundary"]) > MAX_BOUNDARY_CHARS:
        raise InvalidInputError(f"the multipart boundary has {len(options[b'boundary'])} "
                                f"characters; at most {MAX_BOUNDARY_CHARS} are allowed "
                                "(RFC 2046)", {"limit": MAX_BOUNDARY_CHARS})
    name = filename or "upload"
    with _temp_file(directory, _suffix(name) if not multipart else ".part") as (fh, path):
        sink = _Sink(fh, max_bytes)
        form = _FormReader(options[b"boundary"], sink) if multipart else None
        try:
            async for chunk in request.stream():
                if form is not None:
                    form.feed(chunk)
                else:
                    sink.write(chunk)
        except ClientDisconnect:
            raise InvalidInputError("the upload was interrupted; nothing was stored") from None
        fh.flush()
        os.fsync(fh.fileno())
        fields: dict[str, str] = {}
        if form is not None:
            if not form.ended:
                raise InvalidInputError("the multipart body ended before its closing "
                                        "boundary; nothing was stored")
            if form.filename is None:
                raise InvalidInputError("the multipart body has no 'file' part")
            name, fields = filename or form.filename, form.fields
        if sink.size == 0:
            raise InvalidInputError("the uploaded file is empty")
        sha = sink.digest.hexdigest()
        expected = request.headers.get("x-content-sha256") or fields.get("sha256")
        if expected and expected.lower() != sha:
            raise InvalidInputError("the upload does not match its sha256; it was corrupted "
                                    "on the way", {"expected": expected, "received": sha})
    final = path.with_suffix(_suffix(name)) if multipart else path
    if final != path:
        path.rename(final)
    return Upload(final, Path(name).name, sha, sink.size, fields)


def sweep_stale_uploads(directory: Path, older_than_s: float = 3600.0) -> int:
    """Remove upload temp files (``.upload-*``) not modified for ``older_than_s`` seconds:
    those a crashed or killed server left. Younger ones may be live uploads of another
    server process on the same home and are kept. Returns how many were removed."""
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        candidates = list(Path(directory).glob(f"{_TEMP_PREFIX}*"))
    except OSError:
        return 0
    for path in candidates:
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove
    return removed
