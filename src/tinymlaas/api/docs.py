"""The API's interactive documentation, served without a CDN (works offline).

``/api/v1/docs`` (Swagger UI) and ``/api/v1/redoc`` (ReDoc) load their JavaScript and CSS
from the installed ``fastapi-offline`` package and start from small script files of ours
(``static/*-init.js``) instead of inline scripts, so they run under the site's
Content-Security-Policy (see :mod:`tinymlaas.api.middleware`).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from tinymlaas.api.middleware import DOCS_POLICY
from tinymlaas.errors import NotFoundError

__all__ = ["ASSETS_URL", "install_docs", "vendor_dir"]

#: Where the docs' scripts, styles and icon are served.
ASSETS_URL = "/static/docs"
_OWN = Path(__file__).parent / "static"
#: Served file name -> (package whose files hold it, media type).
_ASSETS = {
    "swagger-ui-bundle.js": ("vendor", "text/javascript"),
    "swagger-ui.css": ("vendor", "text/css"),
    "redoc.standalone.js": ("vendor", "text/javascript"),
    "favicon.png": ("vendor", "image/png"),
    "swagger-init.js": ("own", "text/javascript"),
    "redoc-init.js": ("own", "text/javascript"),
}
#: ReDoc's sidebar shows a logo from its CDN; served without it, nothing leaves the server.
_REDOC_LOGO = (b'"https://cdn.redoc.ly/redoc/logo-mini.svg"',
               b'"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 '
               b'width=%270%27 height=%270%27/%3E"')
_CACHE = {"Cache-Control": "public, max-age=3600"}
_MISSING = "the API docs need the fastapi-offline package on this server; " \
           "`pip install fastapi-offline`"


@cache
def _redoc_js(folder: Path) -> bytes:
    return (folder / "redoc.standalone.js").read_bytes().replace(*_REDOC_LOGO)


@cache
def vendor_dir() -> Path | None:
    """The static folder of the installed ``fastapi-offline`` package (Swagger UI, ReDoc)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if folder.is_dir() else None


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
{head}
</head>
<body>
{body}
</body>
</html>
""", headers={"Cache-Control": "no-cache", "Content-Security-Policy": DOCS_POLICY})


def install_docs(app: FastAPI, prefix: str) -> None:
    """Add ``{prefix}/docs``, ``{prefix}/redoc`` and their assets under :data:`ASSETS_URL`;
    create the app with ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are off."""

    def urls(request: Request) -> tuple[str, str]:
        if vendor_dir() is None:
            raise NotFoundError(_MISSING)
        root = request.scope.get("root_path", "")
        return escape(f"{root}{app.openapi_url}"), escape(f"{root}{ASSETS_URL}")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return _page(
            f"{app.title} – Swagger UI",
            f'<link rel="stylesheet" href="{assets}/swagger-ui.css">\n'
            f'<link rel="icon" type="image/png" href="{assets}/favicon.png">',
            f'<div id="swagger-ui" data-openapi-url="{spec}"></div>\n'
            f'<script src="{assets}/swagger-ui-bundle.js"></script>\n'
            f'<script src="{assets}/swagger-init.js"></script>')

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return _page(
            f"{app.title} – ReDoc",
            f'<link rel="icon" type="image/png" href="{assets}/favicon.png">\n'
            '<style>body { margin: 0; }</style>',
            f'<div id="redoc" data-openapi-url="{spec}"></div>\n'
            f'<script src="{assets}/redoc.standalone.js"></script>\n'
            f'<script src="{assets}/redoc-init.js"></script>')

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise NotFoundError(f"no docs asset {name!r}")
        where, media_type = _ASSETS[name]
        folder = _OWN if where == "own" else vendor_dir()
        if folder is None:
            raise NotFoundError(_MISSING)
        if name == "redoc.standalone.js":
            return Response(_redoc_js(folder), media_type=media_type, headers=_CACHE)
        return FileResponse(folder / name, media_type=media_type, headers=_CACHE)
