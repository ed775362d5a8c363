"""ASGI middleware guarding the edges before routing."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import MutableHeaders

__all__ = ["API_POLICY", "DOCS_POLICY", "HSTS", "PAGE_POLICY", "RejectNulBytes",
           "SecurityHeaders", "csp"]

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
