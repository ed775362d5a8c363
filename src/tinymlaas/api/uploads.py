"""Streaming uploads: the request body goes to a temp file chunk by chunk, hashed on the
way and cut off at a size limit (413), so a large upload never sits in memory.

Two body forms are accepted: the raw file (``application/octet-stream``, file name in the
``filename`` query parameter) or ``multipart/form-data`` with one ``file`` part, a boundary
of 1 to 70 characters (RFC 2046) and its closing boundary: a body that ends before it is
refused, so a truncated file is never registered. The temp file is removed whatever
happens: the client disconnecting, the limit, a bad body, or the caller finishing with it;
:func:`sweep_stale_uploads` removes those a crashed server left behind.

A model upload may add ``external_data`` parts: the ONNX external-data files the model
references (``model.onnx.data``), each named by its part's file name, which must be a
plain file name. They stream to their own temp files under the same size limit (all parts
together); :func:`staged_model` puts them next to the model in a fresh folder, after checking
that their names are exactly the locations the model references.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
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

from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    TinymlaasError,
    UnsupportedModelError,
)
from tinymlaas.formats.models import detect_model_kind, external_data_locations

__all__ = ["MODEL_UPLOAD_BODY", "SIDECAR_FIELD", "UPLOAD_BODY", "Upload", "receive_upload",
           "safe_stem", "staged_model", "sweep_stale_uploads"]

_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_MAX_FIELD_BYTES = 64 * 1024
#: RFC 2046: a multipart boundary has 1 to 70 characters.
MAX_BOUNDARY_CHARS = 70
_TEMP_PREFIX = ".upload-"
#: The multipart part name of ONNX external-data files.
SIDECAR_FIELD = "external_data"
#: At most this many external-data parts in one upload.
MAX_SIDECARS = 4096
#: An external-data file name: a plain file name, no folders, no leading dot.
_SIDECAR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")
#: OpenAPI request body of upload routes (FastAPI cannot infer it from a streamed body).
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "sha256": {"type": "string"}}}}}}}
#: The model upload body: ``UPLOAD_BODY`` plus the ONNX external-data parts.
MODEL_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": UPLOAD_BODY["requestBody"]["content"]["application/octet-stream"],
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "sha256": {"type": "string"},
            SIDECAR_FIELD: {
                "type": "array", "maxItems": MAX_SIDECARS,
                "items": {"type": "string", "format": "binary"},
                "description": "ONNX external-data files of the model, each named (by its "
                               "part's file name) exactly as a location the model "
                               "references; plain file names only."}}}}}}}


@dataclass
class Upload:
    """A received file: where it is, what the client called it, its sha256 and size."""

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    #: External-data files: the client's file name -> the temp file.
    sidecars: dict[str, Path] = field(default_factory=dict)

    def discard(self) -> None:
        """Remove the temp files."""
        for path in (self.path, *self.sidecars.values()):
            path.unlink(missing_ok=True)


def safe_stem(filename: str, fallback: str) -> str:
    """A registrable name from a client file name (letters, digits, ``._-``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("-._")[:100]
    return stem or fallback


class _Budget:
    """The bytes all files of one upload may take together."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.max_bytes:
            raise PayloadTooLargeError(f"upload is larger than the limit of {self.max_bytes} "
                                       "bytes", {"limit_bytes": self.max_bytes})


class _Sink:
    """Writes the file's bytes, hashing and counting them."""

    def __init__(self, fh: BinaryIO, budget: _Budget) -> None:
        self.fh = fh
        self.budget = budget
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.budget.take(len(data))
        self.size += len(data)
        self.digest.update(data)
        self.fh.write(data)


class _Sidecars:
    """External-data parts, each streamed to its own temp file in ``directory``."""

    def __init__(self, directory: Path, budget: _Budget) -> None:
        self.directory = directory
        self.budget = budget
        self.paths: dict[str, Path] = {}
        self._fh: BinaryIO | None = None

    def begin(self, filename: str) -> None:
        if not filename:
            return  # an empty file input of a browser form: a nameless, empty part
        if not _SIDECAR_NAME.match(filename) or filename == "..":
            raise InvalidInputError(
                f"external data part {filename[:80]!r} is not a plain file name (letters, "
                "digits and ._+-, no folders); name it as the model's external data location",
                {"part": SIDECAR_FIELD})
        if filename in self.paths:
            raise InvalidInputError(f"external data {filename!r} was sent twice",
                                    {"part": SIDECAR_FIELD})
        if len(self.paths) >= MAX_SIDECARS:
            raise InvalidInputError(f"at most {MAX_SIDECARS} external data parts per upload",
                                    {"limit": MAX_SIDECARS})
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=_TEMP_PREFIX, suffix=".part")
        self.paths[filename] = Path(name)
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self._fh is None:
            if not data:
                return
            raise InvalidInputError("an external data part needs a file name: the location "
                                    "the model references", {"part": SIDECAR_FIELD})
        self.budget.take(len(data))
        self._fh.write(data)

    def end(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for path in self.paths.values():
            path.unlink(missing_ok=True)


class _FormReader:
    """Feeds a multipart body to the streaming parser; the ``file`` part goes to a sink,
    ``external_data`` parts (when ``sidecars`` is given) to their own files."""

    def __init__(self, boundary: bytes, sink: _Sink, sidecars: _Sidecars | None = None) -> None:
        self.sink = sink
        self.sidecars = sidecars
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._is_file = False
        self._is_sidecar = False
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
        self._headers, self._name, self._is_file, self._is_sidecar = {}, None, False, False
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
        elif self._name == SIDECAR_FIELD and self.sidecars is not None:
            self._is_sidecar = True
            self.sidecars.begin((filename or b"").decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.sink.write(data[start:end])
            return
        if self._is_sidecar:
            assert self.sidecars is not None
            self.sidecars.write(data[start:end])
            return
        self._field_bytes += end - start
        if self._field_bytes > _MAX_FIELD_BYTES:
            raise InvalidInputError("form fields are too large; only 'file' may be big")
        self._buffer += data[start:end]

    def _part_end(self) -> None:
        if self._is_sidecar:
            assert self.sidecars is not None
            self.sidecars.end()
        elif not self._is_file and self._name:
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
                         filename: str | None = None, *, sidecars: bool = False) -> Upload:
    """Stream the request's file into ``directory``; the caller calls ``Upload.discard``.

    With ``sidecars``, ``external_data`` parts are files too (``Upload.sidecars``); the
    limit is on all files together.

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
    if not multipart:
        options.pop(b"boundary", None)
    budget = _Budget(max_bytes)
    extra = _Sidecars(directory, budget) if sidecars and multipart else None
    try:
        upload = await _receive(request, directory, budget, filename, options, extra)
    except BaseException:
        if extra is not None:
            extra.discard()
        raise
    upload.sidecars = extra.paths if extra is not None else {}
    return upload


async def _receive(request: Request, directory: Path, budget: _Budget, filename: str | None,
                   options: dict[bytes, bytes], sidecars: _Sidecars | None) -> Upload:
    multipart = b"boundary" in options
    name = filename or "upload"
    with _temp_file(directory, _suffix(name) if not multipart else ".part") as (fh, path):
        sink = _Sink(fh, budget)
        form = _FormReader(options[b"boundary"], sink, sidecars) if multipart else None
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


@contextmanager
def staged_model(upload: Upload) -> Iterator[Path]:
    """The uploaded model in a fresh folder of its own, with its external-data files next to
    it under their names; the folder goes when the block ends. Blocking: call it in a
    worker thread.

    Raises:
        UnsafeInputError: the model references external data outside its folder, or is a
            pickle.
        UnsupportedModelError: (422) the model references external data that was not
            uploaded, or an uploaded external-data file the model does not reference.
        InvalidInputError: external data sent with a model that is not ONNX.
    """
    folder = Path(tempfile.mkdtemp(dir=upload.path.parent, prefix=_TEMP_PREFIX))
    try:
        model = folder / f"model{upload.path.suffix}"
        os.replace(upload.path, model)
        upload.path = model
        for name, path in upload.sidecars.items():
            os.replace(path, folder / name)
        upload.sidecars = {name: folder / name for name in upload.sidecars}
        if model.name in upload.sidecars:
            raise InvalidInputError(f"external data may not be named {model.name!r}")
        if detect_model_kind(model) is not ArtifactKind.onnx:
            if upload.sidecars:
                raise InvalidInputError("external data goes with an ONNX model only; this "
                                        "model is not ONNX", {"part": SIDECAR_FIELD})
        else:
            _match_sidecars(external_data_locations(model), set(upload.sidecars))
        yield model
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _match_sidecars(locations: set[str], sent: set[str]) -> None:
    """The uploaded external-data files are exactly the ones the model references."""
    if nested := sorted(loc for loc in locations if "/" in loc):
        raise UnsupportedModelError(
            f"the model keeps external data in a subfolder ({nested[0]!r}); uploads take "
            "external-data files next to the model: save it again with "
            "onnx.save_model(..., location='<file name>')", {"missing": nested[:20]})
    if missing := sorted(locations - sent):
        raise UnsupportedModelError(
            f"the model keeps its weights in external data {missing[0]!r}, which was not "
            f"uploaded: send it as an '{SIDECAR_FIELD}' part with that file name",
            {"missing": missing[:20]})
    if extra := sorted(sent - locations):
        raise UnsupportedModelError(
            f"external data {extra[0]!r} was uploaded but the model does not reference it "
            f"(it references {', '.join(map(repr, sorted(locations))) or 'none'})",
            {"unreferenced": extra[:20]})


def sweep_stale_uploads(directory: Path, older_than_s: float = 3600.0) -> int:
    """Remove upload temp files and folders (``.upload-*``) not modified for
    ``older_than_s`` seconds:
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
            if path.is_symlink() or path.lstat().st_mtime >= cutoff:
                continue
            if path.is_file():
                path.unlink()
                removed += 1
            elif path.is_dir():
                shutil.rmtree(path)
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove
    return removed
