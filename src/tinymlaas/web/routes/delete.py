"""Deleting from the web: a confirmation page that says what goes, then the delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.errors import NotFoundError, TinymlaasError
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)
KINDS = ("runs", "models", "datasets", "projects")


def _target(viewer: Viewer, kind: str, ref: str) -> dict[str, Any]:
    """What is about to be deleted, what goes with it, and where to go afterwards."""
    ws = viewer.workspace
    if kind == "runs":
        run = ws.get_run(ref)
        return {"what": "run", "name": run.name, "id": run.id, "consequences": [
            "its step outputs and evaluations, unless another run uses the same ones"],
            "back": f"/runs/{run.id}", "after": f"/projects/{run.project}"}
    if kind == "models":
        model = ws.get_model(ref)
        runs = [r for r in ws.list_runs(model.project) if r.model_id == model.id]
        return {"what": "model", "name": model.name, "id": model.id, "runs": runs,
                "consequences": [f"its file ({model.kind.value})"],
                "back": "/models", "after": "/models"}
    if kind == "datasets":
        dataset = ws.get_dataset(ref)
        runs = [r for r in ws.list_runs(dataset.project) if r.dataset_id == dataset.id]
        return {"what": "dataset", "name": dataset.name, "id": dataset.id, "runs": runs,
                "consequences": [f"its {dataset.num_samples} samples"],
                "back": "/datasets", "after": "/datasets"}
    if kind == "projects":
        project = ws.get_project(ref)
        runs = ws.list_runs(project.id)
        return {"what": "project", "name": project.name, "id": project.id, "consequences": [
            f"its {len(ws.list_models(project.id))} model(s), "
            f"{len(ws.list_datasets(project.id))} dataset(s) and {len(runs)} run(s)",
            "its templates, registered steps, webhooks, devices and signing keys",
            "everyone's access to it"], "back": f"/projects/{project.id}",
            "after": "/projects"}
    raise NotFoundError(f"nothing to delete at /{kind}")


@router.get("/{kind}/{ref}/delete")
def confirm_page(request: Request, kind: str, ref: str, viewer: WebSession) -> Response:
    return render(request, "delete.html", {"target": _target(viewer, kind, ref),
                                           "kind": kind, "error": None}, viewer=viewer)


@router.post("/{kind}/{ref}/delete")
def delete(request: Request, kind: str, ref: str, viewer: WebSession,
           force: Annotated[str | None, Form()] = None,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    target = _target(viewer, kind, ref)
    ws = viewer.workspace
    try:
        if kind == "runs":
            ws.delete_run(target["id"])
        elif kind == "models":
            ws.delete_model(target["id"], force=force is not None)
        elif kind == "datasets":
            ws.delete_dataset(target["id"], force=force is not None)
        else:
            ws.delete_project(target["id"])
    except TinymlaasError as exc:
        return render(request, "delete.html", {"target": target, "kind": kind,
                                               "error": exc.message},
                      viewer=viewer, status_code=exc.http_status)
    return RedirectResponse(f"{target['after']}?deleted={target['what']}", status_code=303)
