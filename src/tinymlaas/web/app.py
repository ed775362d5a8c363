"""Wiring the web UI into the Studio app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tinymlaas.web.routes import web_router

__all__ = ["STATIC_DIR", "install_web"]

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    """Mount the pages at ``/`` and their CSS and JavaScript at ``/static/web``."""
    app.mount("/static/web", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(web_router)
