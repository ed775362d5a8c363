"""Comparing runs: a table and trade-off plots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tinymlaas.web.charts import BAR_METRICS, bar_figures, scatter_figures
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import WebSession

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)
MAX_RUNS = 50


@router.get("/projects/{project_id}/compare")
def compare_page(request: Request, project_id: str, viewer: WebSession,
                 run: Annotated[list[str] | None, Query(max_length=MAX_RUNS)] = None) -> Response:
    ws = viewer.workspace
    project = ws.get_project(project_id)
    refs = list(dict.fromkeys(run or []))
    context = {"project": project, "rows": [], "error": None, "metrics": BAR_METRICS}
    if len(refs) < 2:
        context["error"] = "select at least two runs on the dashboard to compare them"
        return render(request, "compare.html", context, viewer=viewer, status_code=400)
    runs = [ws.get_run(r, project.id) for r in refs]
    rows = ws.compare([r.id for r in runs])
    warnings = list(dict.fromkeys(w for r in rows for w in r.warnings))
    context.update(rows=rows, warnings=warnings, scatters=scatter_figures(rows),
                   bars=bar_figures(rows))
    return render(request, "compare.html", context, viewer=viewer)
