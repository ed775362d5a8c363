"""The sites page: the sites of the user's projects with their workers (last heartbeat,
running steps), a form that creates a site and shows its token once, and delete buttons.

Everything goes through :class:`~tinymlaas.service.sites.SitesView`: another user's site
is "not found" (404), exactly as in the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.api.deps import StudioDep
from tinymlaas.domain import Project
from tinymlaas.domain.sites import worker_alive
from tinymlaas.errors import InvalidInputError, NotFoundError, TinymlaasError
from tinymlaas.service.sites import Sites, SitesView
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)


def _sites(viewer: Viewer, studio: StudioDep) -> SitesView:
    return SitesView(Sites(studio.services), viewer.workspace)


def _writable(viewer: Viewer) -> list[Project]:
    ws = viewer.workspace
    return [p for p in ws.list_projects() if ws.roles.get(p.id) in {"owner", "editor"}]


def _sites_page(request: Request, viewer: Viewer, studio: StudioDep, *,
                form: dict[str, Any] | None = None, created: dict[str, Any] | None = None,
                error: str | None = None, status_code: int = 200) -> Response:
    ws = viewer.workspace
    sites = _sites(viewer, studio).list()
    now = datetime.now(UTC)
    writable = _writable(viewer)
    return render(request, "sites.html", {
        "sites": sites, "projects": {p.id: p for p in ws.list_projects()},
        "alive": {(s.id, w.id): worker_alive(w, now) for s in sites for w in s.workers},
        "writable": writable, "can_write": {p.id for p in writable},
        "form": form or {"project": ws.user.default_project}, "created": created,
        "error": error, "deleted": request.query_params.get("deleted")},
        viewer=viewer, status_code=status_code)


@router.get("/sites")
def sites_page(request: Request, viewer: WebSession, studio: StudioDep) -> Response:
    return _sites_page(request, viewer, studio)


@router.post("/sites")
def create_site(request: Request, viewer: WebSession, studio: StudioDep,
                name: Annotated[str, Form(max_length=200)] = "",
                project: Annotated[str, Form(max_length=100)] = "",
                csrf_token: Annotated[str, Form()] = "") -> Response:
    """Create a site; the page answers with its token, shown this once (it is stored only
    as a hash)."""
    check_csrf(request, csrf_token)
    form = {"name": name, "project": project}
    try:
        if not name.strip():
            raise InvalidInputError("give the site a name")
        site, token = _sites(viewer, studio).create(name.strip(), project or None)
    except TinymlaasError as exc:
        if isinstance(exc, NotFoundError) and (exc.details or {}).get("kind") == "project":
            raise  # another user's project: the 404 page
        return _sites_page(request, viewer, studio, form=form, error=exc.message,
                           status_code=exc.http_status)
    return _sites_page(request, viewer, studio, created={"name": site.name, "token": token},
                       status_code=201)


@router.post("/sites/{ref}/delete")
def delete_site(request: Request, ref: str, viewer: WebSession, studio: StudioDep,
                csrf_token: Annotated[str, Form()] = "") -> Response:
    """Delete the site; its token stops working at once."""
    check_csrf(request, csrf_token)
    site = _sites(viewer, studio).delete(ref)
    return RedirectResponse(f"/sites?deleted={site.name}", status_code=303)
