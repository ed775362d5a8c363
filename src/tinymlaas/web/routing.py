"""Route class of the pages: errors become HTML, never the API's JSON bodies.

A missing session redirects to the log-in page (back to where the user was going); any
:class:`~tinymlaas.errors.TinymlaasError` renders the error page with its HTTP status, so
another user's project answers 404 exactly like one that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from tinymlaas.errors import TinymlaasError
from tinymlaas.web.render import render
from tinymlaas.web.session import LoginRequired, optional_viewer

__all__ = ["WebRoute", "safe_next"]

log = logging.getLogger("tinymlaas.web")
_TITLES = {400: "Invalid request", 401: "Log in required", 403: "Not allowed",
           404: "Not found", 409: "Conflict", 413: "Too large", 429: "Too many attempts"}


def safe_next(target: str | None, fallback: str = "/projects") -> str:
    """A same-site path to go to after logging in (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


class WebRoute(APIRoute):
    """An API route whose errors render as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.method != "GET":
                    return RedirectResponse("/login", status_code=303)
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            except TinymlaasError as exc:
                return _error_page(request, exc.http_status, exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: "
                                     f"{e.get('msg', '')}" for e in exc.errors()[:5])
                return _error_page(request, 400, f"invalid request: {problems}")

        return route


def _error_page(request: Request, status: int, message: str) -> Response:
    studio = request.app.state.studio
    viewer = optional_viewer(request, studio)
    if status >= 500:
        log.error("web error %s: %s", status, message)
    return render(request, "error.html",
                  {"status": status, "title": _TITLES.get(status, "Something went wrong"),
                   "message": message}, viewer=viewer, status_code=status)
