"""ASGI middleware guarding the edges before routing."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException

from tinymlaas.errors import PayloadTooLargeError

__all__ = ["API_POLICY", "DOCS_POLICY", "HSTS", "PAGE_POLICY", "BodyLimit", "RejectNulBytes",
           "RequestBodyTooLarge", "SecurityHeaders", "csp"]

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


def csp(**directives: str) -> str:
    """A Content-Security-Policy value from ``directive_name=sources`` (``_`` for ``-``)."""
    return "; ".join(f"{name.replace('_', '-')} {value}".strip()
                     for name, value in directives.items())


#: HTML pages: scripts and everything else from this origin only, never inline (the pages
#: carry no inline script or event handler; data for scripts travels in
#: ``<script type="application/json">`` blocks, which are never executed). Styles allow
#: inline because plotly.js (charts) and ReDoc inject ``<style>`` elements; images allow
#: ``blob:`` and ``data:`` for plotly's PNG export and the icons of Swagger UI's stylesheet.
_PAGE = {"default_src": "'self'", "script_src": "'self'",
         "style_src": "'self' 'unsafe-inline'", "img_src": "'self' data: blob:",
         "connect_src": "'self'", "object_src": "'none'", "base_uri": "'self'",
         "form_action": "'self'", "frame_ancestors": "'none'"}
PAGE_POLICY = csp(**_PAGE)
#: The API docs (``/api/v1/docs``, ``/api/v1/redoc``): the page policy, and ReDoc's search
#: index runs in a worker it makes from a ``blob:``.
DOCS_POLICY = csp(**_PAGE, worker_src="'self' blob:")
#: Everything that is not HTML (JSON, files, events): nothing may load or run in it, should
#: a browser ever open it as a document.
API_POLICY = csp(default_src="'none'", frame_ancestors="'none'", base_uri="'none'",
                 form_action="'none'")
#: Sent on responses to requests that came over HTTPS only (behind a TLS-terminating
#: proxy: its ``X-Forwarded-Proto`` counts when it is in ``TINYMLAAS_TRUSTED_PROXIES``).
#: Sub-domains are the operator's business, so they are not included.
HSTS = "max-age=31536000"
_COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


class SecurityHeaders:
    """Add the browser-hardening headers to every HTTP response: a Content-Security-Policy
    (:data:`PAGE_POLICY` for HTML, :data:`API_POLICY` for anything else), ``nosniff``, a
    same-origin referrer and opener policy, no framing, a minimal Permissions-Policy, and
    HSTS when the request came over HTTPS. A header the route already set is kept, so a
    page may send a policy of its own. Pure ASGI: the body passes through untouched, so
    streamed responses and server-sent events flow as before.
    """

    def __init__(self, app: Any, *, page_policy: str = PAGE_POLICY,
                 api_policy: str = API_POLICY, hsts: str | None = HSTS) -> None:
        self.app = app
        self.page_policy = page_policy
        self.api_policy = api_policy
        self.hsts = hsts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                html = headers.get("content-type", "").lower().startswith("text/html")
                extra = {**_COMMON, "content-security-policy":
                         self.page_policy if html else self.api_policy}
                if https and self.hsts:
                    extra["strict-transport-security"] = self.hsts
                for name, value in extra.items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_secured)


class RequestBodyTooLarge(PayloadTooLargeError, HTTPException):
    """A request body past its route's limit (413). A :class:`PayloadTooLargeError`, so the
    API answers it in its error shape and the pages as an error page; an ``HTTPException``
    too, so FastAPI lets it through when it is raised while the body is parsed."""

    def __init__(self, limit: int, setting: str | None) -> None:
        where = f" (the setting {setting})" if setting else ""
        PayloadTooLargeError.__init__(
            self, f"the request body is larger than the limit of {limit} bytes{where}",
            {"limit_bytes": limit, **({"setting": setting} if setting else {})})
        self.status_code = 413
        self.detail = self.message
        self.headers = None


#: The limit of one route: its bytes and the setting that sets them (``None``: the route
#: limits its body itself, as streaming uploads do).
RouteLimit = tuple[int, str | None] | None


class BodyLimit:
    """Bound every request body: ``default`` bytes, or what ``routes`` holds for the route
    (by its endpoint: streaming uploads, which limit their bodies themselves, hold
    ``None``). Pure ASGI: nothing is buffered here. The limit is applied when the route
    first reads the body (the router has matched it by then): a ``Content-Length`` past it
    is refused before any byte is read; a body without one (chunked) is refused as soon as
    it passes it, and the rest of it is never read. The 413 is a
    :class:`RequestBodyTooLarge` raised to the route, whose error handling answers it (JSON
    for the API, a page for the web UI); one that escapes the app is answered here.
    """

    def __init__(self, app: Any, *, default: tuple[int, str | None],
                 routes: Mapping[Callable[..., Any], RouteLimit]) -> None:
        self.app = app
        self.default = default
        self.routes = routes

    def limit(self, endpoint: Callable[..., Any] | None) -> RouteLimit:
        """The limit of the route of this endpoint."""
        if endpoint is None:
            return self.default
        return self.routes.get(endpoint, self.default)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"limit": ..., "received": 0, "started": False,
                                 "refused": False}

        async def limited_receive() -> Any:
            limit = state["limit"]
            if limit is ...:
                endpoint = getattr(scope.get("route"), "endpoint", None)
                limit = state["limit"] = self.limit(endpoint)
                if limit is not None:
                    declared = Headers(scope=scope).get("content-length", "")
                    if declared.isdigit() and int(declared) > limit[0]:
                        state["refused"] = True
                        raise RequestBodyTooLarge(*limit)
            if state["refused"]:  # read again after the refusal
                raise RequestBodyTooLarge(*limit)
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit[0]:
                    if state["started"]:  # a response that listens for the client leaving
                        return {"type": "http.disconnect"}
                    state["refused"] = True
                    raise RequestBodyTooLarge(*limit)
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if state["refused"]:  # the rest of the body is not read: end the connection
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception as exc:
            if not state["refused"]:
                raise
            if state["started"]:
                # a response that was going out (a file listening for the client leaving)
                # read past the limit: the connection ends without the rest of it
                return
            if not isinstance(exc, RequestBodyTooLarge):
                raise
            body = json.dumps(exc.to_dict()).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
