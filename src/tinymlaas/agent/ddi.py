"""The agent's HTTP client of the device-facing API (hawkBit DDI paths).

Every request but enrollment carries ``Authorization: TargetToken <credential>``. Links
the server gives are absolute URLs; the agent follows only their path, on the server it
was enrolled with, so a link can never send the credential elsewhere.

Downloads resume: a file arrives as ``<name>.part``; a later attempt asks for
``Range: bytes=<size of the part>-`` and appends on ``206 Partial Content`` (a ``200``
starts over). The whole file must then have the size and sha256 expected, else it is
deleted (a resumed one is fetched once more from the start before giving up).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tinymlaas.contracts.ota import (
    ControllerBase,
    DeploymentBase,
    Enrollment,
    EnrollRequest,
    Feedback,
)
from tinymlaas.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnsafeInputError,
)

__all__ = ["CHUNK_BYTES", "DdiClient", "enroll"]

#: Bytes per write of a download (the ``mid-download`` fault fires after the first).
CHUNK_BYTES = 16 * 1024
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = body.get("message") or body.get("detail") or response.text
    except ValueError:
        message = response.text
    message = f"{what}: {str(message)[:300]}"
    status = response.status_code
    if status == 401:
        raise AuthenticationError(message)
    if status == 404:
        raise NotFoundError(message)
    if status == 413:
        raise PayloadTooLargeError(message)
    if status >= 500 or status in (408, 429):
        raise ServiceUnavailableError(message)
    raise InvalidInputError(message)


def _server(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(f"--server must be an http(s) URL, not {url!r}")
    return url.rstrip("/")


def enroll(server: str, code: str) -> Enrollment:
    """Trade a one-time enrollment code for the device's identity and credential.

    Raises:
        AuthenticationError: the code is unknown, used, expired or revoked.
        ServiceUnavailableError: the server cannot be reached.
    """
    body = EnrollRequest(code=code).model_dump(mode="json")
    try:
        response = httpx.post(f"{_server(server)}/ddi/enroll", json=body, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"cannot reach {server}: {exc}") from None
    _raise_for(response, "enrollment refused")
    return Enrollment.model_validate(response.json())


class DdiClient:
    """One device's session with the server."""

    def __init__(self, server: str, tenant: str, controller_id: str, token: str) -> None:
        self.server = _server(server)
        self.base = f"{self.server}/ddi/{tenant}/controller/v1/{controller_id}"
        self._http = httpx.Client(timeout=TIMEOUT,
                                  headers={"Authorization": f"TargetToken {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DdiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def resolve(self, href: str) -> str:
        """``href``'s path (and query) on the enrolled server."""
        link, server = urlsplit(href), urlsplit(self.server)
        return urlunsplit((server.scheme, server.netloc, link.path, link.query, ""))

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"{what}: cannot reach {self.server}: {exc}") from None
        _raise_for(response, what)
        return response

    def poll(self) -> ControllerBase:
        return ControllerBase.model_validate(self._request("GET", self.base, "poll").json())

    def deployment(self, href: str) -> DeploymentBase:
        response = self._request("GET", self.resolve(href), "deployment")
        return DeploymentBase.model_validate(response.json())

    def feedback(self, action_id: str, feedback: Feedback | dict[str, Any]) -> None:
        body = feedback.model_dump(mode="json", by_alias=True, exclude_none=True) \
            if isinstance(feedback, Feedback) else feedback
        self._request("POST", f"{self.base}/deploymentBase/{action_id}/feedback",
                      "feedback", json=body)

    def get_json(self, href: str, what: str) -> Any:
        return self._request("GET", self.resolve(href), what).json()

    def post_json(self, href: str, body: Any, what: str) -> Any:
        response = self._request("POST", self.resolve(href), what, json=body)
        return response.json() if response.content else None

    def download(self, href: str, dest: Path, *, size: int, sha256: str,
                 first_chunk: Callable[[], None] | None = None) -> Path:
        """``dest`` with exactly ``size`` bytes hashing to ``sha256``, resuming a partial
        download left by an earlier attempt.

        Raises:
            UnsafeInputError: the bytes served do not hash as expected (the file is removed).
            ServiceUnavailableError: the server cannot be reached (the part is kept).
        """
        if dest.exists():
            if dest.stat().st_size == size and _sha256(dest) == sha256:
                return dest
            dest.unlink()
        part = dest.with_name(dest.name + ".part")
        for attempt in range(2):
            have = part.stat().st_size if part.exists() else 0
            if have > size:
                part.unlink()
                have = 0
            if have < size:
                self._fetch(href, part, have, size, first_chunk)
            if part.stat().st_size == size and _sha256(part) == sha256:
                os.replace(part, dest)
                return dest
            part.unlink(missing_ok=True)
            if attempt == 0 and have > 0:
                continue  # the kept part may be what was wrong: once more from the start
            break
        raise UnsafeInputError(f"{dest.name}: the bytes served do not hash as the signed "
                               f"manifest says (sha256 {sha256[:16]}..., {size} bytes)")

    def _fetch(self, href: str, part: Path, have: int, size: int,
               first_chunk: Callable[[], None] | None) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = self.resolve(href)
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:
                    part.unlink(missing_ok=True)
                    raise ServiceUnavailableError(f"{part.name}: the server refused the range "
                                                  f"{have}-; the download starts over next time")
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response, f"download of {part.name[:-5]}")
                resumed = response.status_code == 206
                if resumed and not response.headers.get("content-range", "").startswith(
                        f"bytes {have}-"):
                    part.unlink(missing_ok=True)
                    raise ServiceUnavailableError(f"{part.name}: the server answered another "
                                                  "range; the download starts over next time")
                written = have if resumed else 0
                with part.open("ab" if resumed else "wb") as out:
                    first = True
                    for block in response.iter_bytes(CHUNK_BYTES):
                        written += len(block)
                        if written > size:
                            raise UnsafeInputError(f"{part.name[:-5]}: the server sends more "
                                                   f"than the {size} bytes the manifest says")
                        out.write(block)
                        if first and first_chunk is not None:
                            out.flush()
                            os.fsync(out.fileno())
                            first_chunk()
                        first = False
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"download of {part.name[:-5]} interrupted: "
                                          f"{exc}") from None
        except UnsafeInputError:
            part.unlink(missing_ok=True)
            raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
