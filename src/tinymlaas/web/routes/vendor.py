"""plotly.js, served from the installed ``plotly`` package (no CDN, works offline)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from tinymlaas.errors import NotFoundError
from tinymlaas.web.routing import WebRoute

__all__ = ["plotly_js_path", "router"]

router = APIRouter(route_class=WebRoute)


@cache
def plotly_js_path() -> Path | None:
    """Where the installed plotly package keeps its minified bundle."""
    try:
        import plotly
    except ImportError:
        return None
    root = Path(plotly.__file__).parent
    for candidate in (root / "package_data" / "plotly.min.js", *root.rglob("plotly.min.js")):
        if candidate.is_file():
            return candidate
    return None


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    path = plotly_js_path()
    if path is None:
        raise NotFoundError("plotly is not installed on this server; `pip install plotly`")
    return FileResponse(path, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
