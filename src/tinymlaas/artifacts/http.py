"""Blobs through a server's signed blob URLs: the artifact store of a site worker, which
has httpx and no server stack.

Where a URL comes from is the caller's: a job's :class:`~tinymlaas.contracts.jobs.ArtifactRef`
carries the GET URL of each input, and the site endpoint ``POST /api/v1/sites/{name}/blob-urls``
signs the PUT URL of an output. A download is written to ``<target>.part`` first; when the
connection breaks it carries on from where the part ends with ``Range: bytes=N-`` (also
in a later process: a part left on disk is resumed), and its sha256 is checked before the
file takes its name. The server checks an upload's sha256 against the URL in turn.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tinymlaas import errors
from tinymlaas.contracts.jobs import ArtifactRef

__all__ = ["HttpArtifactStore", "UrlFor"]

#: ``url_for(sha256, method)``: a signed URL that allows ``method`` (GET or PUT) on the blob.
UrlFor = Callable[[str, str], str]
_CHUNK = 1 << 20
_TOTAL = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_STATUS_ERRORS: dict[int, type[errors.TinymlaasError]] = {
    400: errors.InvalidInputError, 401: errors.AuthenticationError,
    403: errors.ForbiddenError, 404: errors.NotFoundError, 413: errors.PayloadTooLargeError,
}


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    try:
        response.read()
        body = response.json()
        message = str(body.get("message") or body.get("detail") or response.text)
    except ValueError:
        message = response.text[:200]
    error = _STATUS_ERRORS.get(response.status_code, errors.ServiceUnavailableError)
    raise error(f"{what}: {message} (HTTP {response.status_code})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


class HttpArtifactStore:
    """An :class:`~tinymlaas.artifacts.ArtifactStore` over signed blob URLs.

    Args:
        url_for: Gives the signed URL of a blob for GET or PUT.
        http: The client to send requests with (default: a new one).
        attempts: Connections tried per download before giving up (each resumes).
        max_bytes: The largest blob accepted; a server sending more is cut off.
        ask_before_upload: Ask (``HEAD`` with the blob's GET URL) whether the server has a
            blob before uploading it; off where ``url_for`` gives upload URLs only (a site
            worker's outputs), and the server then takes the bytes and keeps one copy.
    """

    def __init__(self, url_for: UrlFor, *, http: httpx.Client | None = None,
                 attempts: int = 5, max_bytes: int = 2 * 1024**3,
                 timeout: float = 60.0, ask_before_upload: bool = True) -> None:
        self.url_for = url_for
        self.ask_before_upload = ask_before_upload
        self.attempts = attempts
        self.max_bytes = max_bytes
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> HttpArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self, sha256: str) -> bool:
        try:
            response = self._http.head(self.url_for(sha256, "GET"))
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailableError(f"cannot reach the server: {exc}") from exc
        if response.status_code == 404:
            return False
        _raise_for(response, f"blob {sha256[:12]}")
        return True

    def get_ref(self, ref: ArtifactRef, target: Path) -> Path:
        """Download a job's input from its URL (or the one ``url_for`` gives)."""
        url = ref.url
        return self.get_file(ref.sha256, target, url=url)

    def get_file(self, sha256: str, target: Path, *, url: str | None = None) -> Path:
        """Download blob ``sha256`` to ``target``, resuming after broken connections.

        Raises:
            InvalidInputError: the bytes received do not have the sha256 asked for (the
                part is deleted: a next try starts over).
            ServiceUnavailableError: the server could not be reached ``attempts`` times.
        """
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{sha256[:16]}.part")
        last: Exception | None = None
        for _ in range(self.attempts):
            try:
                if self._fetch(url or self.url_for(sha256, "GET"), part, sha256):
                    break
            except (httpx.TransportError, httpx.StreamError) as exc:
                last = exc  # the part keeps what came: the next try asks for the rest
        else:
            raise errors.ServiceUnavailableError(
                f"blob {sha256[:12]}: the download broke off {self.attempts} times "
                f"({last}); run again to resume it")
        received = _sha256(part)
        if received != sha256:
            part.unlink(missing_ok=True)
            raise errors.InvalidInputError(f"blob {sha256[:12]}: the bytes received have "
                                           f"sha256 {received[:12]}; the download was "
                                           "discarded", {"expected": sha256,
                                                         "received": received})
        os.replace(part, target)
        return target

    def _fetch(self, url: str, part: Path, sha256: str) -> bool:
        """One connection: True when the part now holds the whole blob."""
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the part is whole already (or too long)
                total = response.headers.get("content-range", "").rpartition("/")[2]
                if total.isdigit() and int(total) == have:
                    return True
                part.unlink(missing_ok=True)
                return False
            _raise_for(response, f"blob {sha256[:12]}")
            if response.status_code == 206:
                match = _TOTAL.match(response.headers.get("content-range", ""))
                if match is None or int(match.group(1)) != have:
                    part.unlink(missing_ok=True)  # not the range asked for: start over
                    return False
                mode = "ab"
            else:
                mode, have, match = "wb", 0, None
            expected = response.headers.get("content-length")
            with part.open(mode) as out:
                for chunk in response.iter_bytes():  # as received: a cut loses nothing
                    have += len(chunk)
                    if have > self.max_bytes:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise errors.PayloadTooLargeError(
                            f"blob {sha256[:12]} is larger than {self.max_bytes} bytes")
                    out.write(chunk)
            if response.status_code == 206 and match is not None:
                total = match.group(3)
                return not total.isdigit() or have == int(total)
            return expected is None or not expected.isdigit() or have == int(expected)

    def put_file(self, source: Path) -> tuple[str, int]:
        """Upload ``source`` unless the server has it; returns its sha256 and size."""
        source = Path(source)
        sha, size = _sha256(source), source.stat().st_size
        if self.ask_before_upload and self.exists(sha):
            return sha, size
        try:
            response = self._http.put(self.url_for(sha, "PUT"), content=_chunks(source),
                                      headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(size)})
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailableError(f"cannot reach the server: {exc}") from exc
        _raise_for(response, f"upload of blob {sha[:12]}")
        return sha, size
