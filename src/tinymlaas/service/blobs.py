"""Expiring, HMAC-signed URLs of content-addressed blobs, for workers that hold no user
token (a site's workers fetch a step's inputs and upload its outputs with them).

A URL is ``/api/v1/blobs/{sha256}?method=GET&expires=UNIX&sig=HEX``, where ``sig`` is the
HMAC-SHA256 of ``METHOD\\nSHA256\\nEXPIRES`` under the server's blob key: a file
``blob-url.key`` in the data directory, made on first use with mode 0600 and shared by
every server process on that directory. A GET URL cannot be used to upload, a URL for
another address or a later time does not verify, and an expired one is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from tinymlaas.config import home_key
from tinymlaas.errors import ForbiddenError, InvalidInputError

__all__ = ["BLOB_PATH", "MAX_URL_TTL_S", "BlobSigner"]

BLOB_PATH = "/api/v1/blobs"
#: The longest a signed URL may stay valid.
MAX_URL_TTL_S = 7 * 24 * 3600
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_METHODS = frozenset({"GET", "PUT"})


class BlobSigner:
    """Signs and checks blob URLs with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_home(cls, home: Path) -> BlobSigner:
        return cls(home_key(Path(home), "blob-url.key"))

    def _mac(self, sha256: str, method: str, expires: int) -> str:
        message = f"{method}\n{sha256}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, sha256: str, method: str = "GET", *, ttl_s: float = 3600.0,
             base_url: str = "", now: float | None = None) -> str:
        """A URL that allows ``method`` (GET or PUT) on blob ``sha256`` for ``ttl_s``.

        Args:
            base_url: Prepended to the path (the server's address, e.g. ``http://h:8000``).
        """
        method = method.upper()
        if method not in _METHODS:
            raise InvalidInputError(f"a blob URL allows GET or PUT, not {method}")
        if not _SHA256.match(sha256):
            raise InvalidInputError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
        if not 0 < ttl_s <= MAX_URL_TTL_S:
            raise InvalidInputError(f"a blob URL lives 1 to {MAX_URL_TTL_S} seconds")
        expires = int((time.time() if now is None else now) + ttl_s)
        query = urlencode({"method": method, "expires": expires,
                           "sig": self._mac(sha256, method, expires)})
        return f"{base_url.rstrip('/')}{BLOB_PATH}/{sha256}?{query}"

    def verify(self, sha256: str, method: str, expires: int, sig: str, *,
               now: float | None = None) -> None:
        """Check a request's signature against its method and address.

        Raises:
            ForbiddenError: the signature does not match (changed URL, another method or
                address, another server's key), or the URL has expired.
        """
        method = "GET" if method.upper() == "HEAD" else method.upper()
        expected = self._mac(sha256, method, expires)
        if not hmac.compare_digest(expected, sig):
            raise ForbiddenError("the blob URL's signature does not match; ask the server "
                                 "for a new URL")
        if expires < (time.time() if now is None else now):
            raise ForbiddenError("the blob URL has expired; ask the server for a new URL")
