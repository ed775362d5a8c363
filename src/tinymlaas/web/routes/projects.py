"""Projects: the list, creating and sharing one, and a project's run dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.domain import RunStatus
from tinymlaas.errors import TinymlaasError
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import WebSession, check_csrf
from tinymlaas.web.views import run_row

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)
STATUSES = [s.value for s in RunStatus]


def _projects_page(request: Request, viewer: WebSession, *, error: str | None = None,
                   name: str = "", status_code: int = 200) -> Response:
    ws = viewer.workspace
    projects = ws.list_projects()
    counts = {p.id: len(ws.list_runs(p.id)) for p in projects}
    return render(request, "projects.html", {"projects": projects, "counts": counts,
                                             "error": error, "name": name},
                  viewer=viewer, status_code=status_code)


@router.get("/projects")
def projects_page(request: Request, viewer: WebSession) -> Response:
    return _projects_page(request, viewer)


@router.post("/projects")
def create_project(request: Request, viewer: WebSession, name: Annotated[str, Form()] = "",
                   csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    try:
        project = viewer.workspace.create_project(name)
    except TinymlaasError as exc:
        return _projects_page(request, viewer, error=exc.message, name=name,
                              status_code=exc.http_status)
    return RedirectResponse(f"/projects/{project.id}", status_code=303)


@router.get("/projects/{project_id}")
def dashboard(request: Request, project_id: str, viewer: WebSession,
              status: Annotated[str | None, Query()] = None,
              q: Annotated[str | None, Query(max_length=200)] = None,
              device: Annotated[str | None, Query(max_length=100)] = None,
              share_error: str | None = None) -> Response:
    ws = viewer.workspace
    project = ws.get_project(project_id)
    status = status if status in STATUSES else None
    all_runs = ws.list_runs(project.id)
    names = {m.id: m.name for m in ws.list_models(project.id)}
    rows = [run_row(r, names) for r in all_runs]
    needle = (q or "").strip().lower()
    shown = [r for r in rows
             if (status is None or r.run.status.value == status)
             and (not device or r.run.device == device)
             and (not needle or needle in r.run.name.lower()
                  or any(needle in s for s in r.steps) or needle in r.model_name.lower())]
    devices = sorted({r.device for r in all_runs if r.device})
    members = ws.members(project.id)
    role = next((m.role for m in members if m.user_id == viewer.user.id), "viewer")
    return render(request, "dashboard.html", {
        "project": project, "rows": shown, "total": len(rows), "statuses": STATUSES,
        "devices": devices, "filters": {"status": status or "", "q": q or "",
                                        "device": device or ""},
        "members": members, "role": role, "share_error": share_error,
        "models": names}, viewer=viewer)


@router.post("/projects/{project_id}/members")
def share_project(request: Request, project_id: str, viewer: WebSession,
                  email: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "editor",
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    ws = viewer.workspace
    ws.get_project(project_id)
    try:
        ws.share_project(project_id, email, "viewer" if role == "viewer" else "editor")
    except TinymlaasError as exc:
        return dashboard(request, project_id, viewer, share_error=exc.message)
    return RedirectResponse(f"/projects/{project_id}#members", status_code=303)
