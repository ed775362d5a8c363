"""Jinja2 rendering: one environment, display filters, and the page context every
template gets (the viewer, the CSRF token, the current path)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tinymlaas import __version__
from tinymlaas.domain.quality import PRIMARY_METRICS
from tinymlaas.domain.units import human_bytes, human_kib, human_mib
from tinymlaas.service.compare import RUNTIME_NAMES
from tinymlaas.web.session import Viewer, csrf_token, remember_csrf

__all__ = ["environment", "render"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


def fmt_bytes(value: float | None) -> str:
    return human_bytes(value, "–")


def fmt_kib(value: float | None) -> str:
    """The device catalog's ``ram_kb``/``flash_kb`` (KiB)."""
    return human_kib(value, "–")


def fmt_mib(value: float | None) -> str:
    """A run's ``peak_memory_mb`` (MiB)."""
    return human_mib(value, "–")


def fmt_num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def fmt_delta(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def fmt_time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M")


def ratio(base: float | None, value: float | None) -> float | None:
    """``base / value`` (greater than 1 is smaller or faster), None when unknown."""
    return None if not base or not value else base / value


def runtime_name(runtime: str | None) -> str:
    """A runtime as people read it (``c``: generated C built for the host)."""
    return "–" if not runtime else RUNTIME_NAMES.get(runtime, runtime)


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(bytes=fmt_bytes, kib=fmt_kib, mib=fmt_mib, num=fmt_num,
                       ratio=fmt_ratio, delta=fmt_delta, time=fmt_time)
    env.globals.update(ratio_of=ratio, runtime_name=runtime_name, version=__version__,
                       quality_labels={m.key: m.label for m in PRIMARY_METRICS.values()},
                       quality_metrics={m.key: m for m in PRIMARY_METRICS.values()})
    return env


_ENV = environment()


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           viewer: Viewer | None = None, status_code: int = 200) -> HTMLResponse:
    """A page; ``viewer`` is the signed-in user (None on public pages)."""
    page = {"request": request, "viewer": viewer, "csrf": csrf_token(request),
            "path": request.url.path, **(context or {})}
    response = HTMLResponse(_ENV.get_template(template).render(page), status_code=status_code)
    response.headers["Cache-Control"] = "no-store"  # the rest: api.middleware.SecurityHeaders
    remember_csrf(request, response)
    return response
