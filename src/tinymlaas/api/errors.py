"""Every error leaves the API in one shape: ``{"code", "message", "details"}``.

``TinymlaasError`` is mapped to its ``http_status`` here and nowhere else; FastAPI's
validation errors, Starlette's 404/405s and unexpected exceptions get the same body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tinymlaas.errors import AuthenticationError, RateLimitedError, TinymlaasError

__all__ = ["allowed_methods", "error_response", "install_error_handlers"]

log = logging.getLogger("tinymlaas.api")

_HTTP_CODES = {400: "invalid_input", 401: "unauthenticated", 403: "forbidden",
               404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "validation_error", 429: "rate_limited", 500: "internal_error",
               503: "service_unavailable"}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": details or {}},
                        status_code=status, headers=headers)


def _tinymlaas_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TinymlaasError)
    headers = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.details.get("retry_after_s", 60))
    if exc.http_status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers or None)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
               "type": str(err.get("type", ""))} for err in exc.errors()]
    summary = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors[:5])
    if errors and all(e["loc"][:2] == ["body", "pipeline"] for e in errors):
        # An invalid pipeline is a 400 wherever it comes from (inline, a template, a YAML
        # file), as when the service checked it alone; the spec documents both.
        return error_response(400, "invalid_input", summary, {"errors": errors})
    return error_response(422, "validation_error", f"invalid request: {summary}",
                          {"errors": errors})


#: The order methods are listed in an ``Allow`` header.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on the request's path.

    A 405 from the router names only the methods of the first route whose path matched, so
    a collection with ``GET`` and ``POST`` routes would answer ``Allow: GET``. Each method is
    asked of the app's routes instead (``matches`` is the routing's own test, included
    routers answer for their routes).
    """
    methods = []
    for method in _METHOD_ORDER:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return methods


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = "no such endpoint; see /api/v1/docs for the API"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                          message, headers=headers or None)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error",
                          "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TinymlaasError, _tinymlaas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
