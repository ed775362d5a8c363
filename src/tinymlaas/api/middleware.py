"""ASGI middleware guarding the edges before routing."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RejectNulBytes"]

_BODY = json.dumps({"code": "invalid_input", "message": "NUL characters are not allowed in "
                    "URLs", "details": {}}).encode()


class RejectNulBytes:
    """Answer 400 to URLs with NUL characters (``%00``), which no name, id or parameter may
    hold and which some databases refuse outright. JSON bodies are checked by the schemas.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            query = scope.get("query_string", b"")
            if any(b"\x00" in part or b"%00" in part.lower() for part in (raw, query)) \
                    or "\x00" in scope.get("path", ""):
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(_BODY)).encode())]})
                await send({"type": "http.response.body", "body": _BODY})
                return
        await self.app(scope, receive, send)
