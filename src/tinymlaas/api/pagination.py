"""Pagination of every list endpoint: ``?limit=`` and an opaque ``?cursor=``.

A list answers with a JSON array of at most ``limit`` items (default
:data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`; beyond: 422). When more follow, the
response carries ``Link: </api/v1/...?limit=N&cursor=...>; rel="next"`` (RFC 8288): the
same request with the cursor of the next page. No ``Link`` header: that was the last page.

The cursor wraps the key of the page's last item (keyset pagination,
:mod:`tinymlaas.store.paging`), the list's path, and an HMAC-SHA256 under a key kept in
the server's data directory (``cursor.key``, shared by its worker processes): a cursor
that was changed, or that another list gave out, is a 422.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from tinymlaas.api.common import json_response
from tinymlaas.api.deps import StudioDep
from tinymlaas.config import home_key
from tinymlaas.store.paging import Key, Page, page_list

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "PAGED", "Paging", "PagingDep"]

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_MAX_CURSOR = 1024
#: The form of a cursor (two base64url parts); only the server's own are valid.
_CURSOR = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"

#: The OpenAPI description of a list's 200: the ``Link`` header of the next page.
PAGED: dict[int | str, dict[str, Any]] = {200: {
    "description": f"One page: at most `limit` items (default {DEFAULT_LIMIT}). When more "
                   "follow, the `Link` header gives the next page's URL.",
    "headers": {"Link": {
        "description": 'Only when more items follow: `<URL>; rel="next"`, the same request '
                       "with the next page's `cursor`.",
        "schema": {"type": "string"}}}}}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", "cursor"), "msg": message,
                                    "type": "value_error"}])


class Paging:
    """One list request's page: where it starts (``after``) and how many it holds."""

    def __init__(self, request: Request, response: Response, secret: bytes, limit: int,
                 cursor: str | None) -> None:
        self.request = request
        self.response = response
        self.limit = limit
        self._secret = secret
        self._path = request.url.path
        self.after = self._decode(cursor) if cursor else None

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, key: Key) -> str:
        payload = json.dumps([self._path, *key], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def _decode(self, cursor: str) -> Key:
        try:
            body, signature = cursor.split(".")
            payload, mac = _unb64(body), _unb64(signature)
        except (ValueError, binascii.Error):
            raise _invalid("not a cursor this server gave out; start again from the "
                           "first page (no cursor)") from None
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise _invalid("the cursor was changed or is not from this server; use the "
                           "Link header of the previous page")
        parts = json.loads(payload)
        if parts[0] != self._path:
            raise _invalid(f"this cursor belongs to {parts[0]}, not to {self._path}")
        return tuple(str(part) for part in parts[1:])

    def send(self, page: Page[T]) -> list[T]:
        """The page's items; the ``Link`` header of the next page when there is one."""
        if page.next_key is not None:
            query = self.request.url.include_query_params(
                limit=self.limit, cursor=self.encode(page.next_key)).query
            self.response.headers["Link"] = f'<{self._path}?{query}>; rel="next"'
        return page.items

    def json(self, page: Page[Any], schema: Any) -> Response:
        """:meth:`send` as a :func:`~tinymlaas.api.common.json_response` of ``schema``
        (a returned response does not take the headers set on :attr:`response`)."""
        items = self.send(page)
        link = self.response.headers.get("link")
        return json_response(schema, items, {"Link": link} if link else None)

    def of(self, items: Sequence[T], key: Callable[[T], Key]) -> list[T]:
        """Page a list held in memory (catalogs): ``items`` in ``key`` order."""
        return self.send(page_list(items, key, self.limit, self.after))


async def get_paging(
    request: Request, response: Response, studio: StudioDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=(
        f"Items per page (1 to {MAX_LIMIT}; default {DEFAULT_LIMIT})."))] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=_MAX_CURSOR, pattern=_CURSOR, description=(
        "Where the page starts: the `cursor` of the previous page's `Link` header "
        "(opaque; none for the first page)."))] = None,
) -> Paging:
    return Paging(request, response, home_key(studio.settings.home, "cursor.key"), limit,
                  cursor)


PagingDep = Annotated[Paging, Depends(get_paging)]
