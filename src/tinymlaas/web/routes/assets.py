"""Models, datasets and devices (lists, upload and register forms) and the transformer
catalog."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tinymlaas.api.deps import StudioDep
from tinymlaas.api.responses import model_file_response
from tinymlaas.api.uploads import receive_upload, safe_stem, staged_model
from tinymlaas.domain import DatasetSplits, Device, Task
from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.errors import InvalidInputError, TinymlaasError
from tinymlaas.formats.datasets import BUILTIN_DATASETS, MAX_IMAGE_SIDE
from tinymlaas.formats.text_datasets import MAX_TEXT_LENGTH, TextOptions
from tinymlaas.service.site_datasets import parse_site_source
from tinymlaas.service.sites import Sites, SitesView
from tinymlaas.templates import default_template
from tinymlaas.web.forms import param_fields
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute
from tinymlaas.web.session import Viewer, WebSession, check_csrf

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)
TASKS = [t.value for t in Task]


#: The largest dimension of a model input shape typed in a form.
MAX_INPUT_DIM = 1 << 20


def _ints(text: str, what: str, *, count: int | tuple[int, int], most: int) -> list[int] | None:
    """``"1,8,8"`` or ``"32x32"`` as whole numbers from 1 to ``most``; None when empty."""
    text = text.strip()
    if not text:
        return None
    low, high = (count, count) if isinstance(count, int) else count
    try:
        values = [int(v) for v in text.replace("x", ",").replace("×", ",").split(",")]
    except ValueError:
        values = []
    if not low <= len(values) <= high or not all(1 <= v <= most for v in values):
        raise InvalidInputError(f"{what}: expected {low if low == high else f'{low} to {high}'}"
                                f" whole numbers from 1 to {most:,}, got {text[:40]!r}",
                                {"field": what})
    return values


def _splits(fields: dict[str, str]) -> DatasetSplits:
    try:
        values: dict[str, Any] = {
            "test_fraction": float(fields.get("test_fraction") or 0.2),
            "calibration_size": int(fields.get("calibration_size") or 256),
            "seed": int(fields.get("seed") or 0)}
    except ValueError:
        raise InvalidInputError("splits: the test fraction, calibration size and seed are "
                                "numbers", {"field": "splits"}) from None
    try:
        return DatasetSplits(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInputError(f"splits: {problems}", {"field": "splits"}) from None


def _writable_projects(viewer: Viewer) -> list[Any]:
    ws = viewer.workspace
    return [p for p in ws.list_projects()
            if ws.store.role_of(p.id, viewer.user.id) in {"owner", "editor"}]


def _project_names(viewer: Viewer) -> dict[str, str]:
    return {p.id: p.name for p in viewer.workspace.list_projects()}


# models -------------------------------------------------------------------------------------

def _models_page(request: Request, viewer: Viewer, error: str | None = None,
                 status_code: int = 200) -> Response:
    models = viewer.workspace.list_models()
    return render(request, "models.html", {
        "models": models, "projects": _writable_projects(viewer),
        "default_templates": {m.id: default_template(m.kind.value) for m in models},
        "project_names": _project_names(viewer), "tasks": TASKS, "error": error},
        viewer=viewer, status_code=status_code)


@router.get("/models")
def models_page(request: Request, viewer: WebSession) -> Response:
    return _models_page(request, viewer)


@router.post("/models")
async def upload_model(request: Request, viewer: WebSession, studio: StudioDep) -> Response:
    settings = studio.settings
    limit = min(settings.max_upload_bytes, settings.max_model_bytes)
    try:
        upload = await receive_upload(request, settings.home / "uploads", limit,
                                      sidecars=True)
    except TinymlaasError as exc:
        return _models_page(request, viewer, exc.message, exc.http_status)
    try:
        check_csrf(request, upload.fields.get("csrf_token"))
        fields = upload.fields
        task = fields.get("task") or ""
        input_shape = _ints(fields.get("input_shape", ""), "input shape", count=(1, 8),
                            most=MAX_INPUT_DIM)

        def register() -> Any:
            with staged_model(upload) as path:
                return viewer.workspace.add_model(
                    path, fields.get("name", "").strip() or safe_stem(upload.filename, "model"),
                    project=fields.get("project") or None,
                    task=Task(task) if task in TASKS else Task.classification,
                    input_shape=input_shape, description=fields.get("description", "")[:2000])

        model = await run_in_threadpool(register)
    except TinymlaasError as exc:
        return _models_page(request, viewer, exc.message, exc.http_status)
    finally:
        upload.discard()
    return RedirectResponse(f"/models?added={model.id}", status_code=303)


@router.post("/models/hub")
def import_hub_model(request: Request, viewer: WebSession,
                     repo_id: Annotated[str, Form(max_length=200)] = "",
                     revision: Annotated[str, Form(max_length=100)] = "",
                     name: Annotated[str, Form(max_length=100)] = "",
                     project: Annotated[str, Form(max_length=100)] = "",
                     task: Annotated[str, Form(max_length=40)] = "",
                     csrf_token: Annotated[str, Form()] = "") -> Response:
    """A Hugging Face model repo, exported to ONNX with its tokenizer (as ``models add
    hf:ORG/NAME``); an unreachable Hub shows its 503 message on the page."""
    check_csrf(request, csrf_token)
    try:
        repo = repo_id.strip().removeprefix("hf:")
        if not repo:
            raise InvalidInputError("repo: give the Hugging Face repo id, e.g. "
                                    "sentence-transformers/all-MiniLM-L6-v2", {"field": "repo"})
        model = viewer.workspace.add_hf_model(
            f"hf:{repo}", name.strip() or None, revision=revision.strip() or None,
            project=project or None, task=Task(task) if task in TASKS else None)
    except TinymlaasError as exc:
        return _models_page(request, viewer, exc.message, exc.http_status)
    return RedirectResponse(f"/models?added={model.id}", status_code=303)


@router.get("/models/{ref}/file")
def download_model(ref: str, viewer: WebSession) -> Response:
    return model_file_response(viewer.workspace, ref)


# datasets -----------------------------------------------------------------------------------

def _datasets_page(request: Request, viewer: Viewer, error: str | None = None,
                   status_code: int = 200, site_form: dict[str, str] | None = None) -> Response:
    studio = request.app.state.studio
    return render(request, "datasets.html", {
        "datasets": viewer.workspace.list_datasets(), "projects": _writable_projects(viewer),
        "project_names": _project_names(viewer), "tasks": TASKS, "error": error,
        "sites": SitesView(Sites(studio.services), viewer.workspace).list(),
        "site_form": site_form or {},
        "text_models": [m for m in viewer.workspace.list_models()
                        if m.kind.value == "onnx" and any(i.name == "input_ids"
                                                          for i in m.inputs)]},
        viewer=viewer, status_code=status_code)


@router.get("/datasets")
def datasets_page(request: Request, viewer: WebSession) -> Response:
    return _datasets_page(request, viewer)


@router.post("/datasets")
async def upload_dataset(request: Request, viewer: WebSession, studio: StudioDep) -> Response:
    settings = studio.settings
    limit = min(settings.max_upload_bytes, settings.max_dataset_bytes)
    try:
        upload = await receive_upload(request, settings.home / "uploads", limit)
    except TinymlaasError as exc:
        return _datasets_page(request, viewer, exc.message, exc.http_status)
    try:
        check_csrf(request, upload.fields.get("csrf_token"))
        fields = upload.fields
        task = Task(fields["task"]) if fields.get("task") in TASKS else None
        size = _ints(fields.get("image_size", ""), "image size", count=2, most=MAX_IMAGE_SIDE)
        dataset = await run_in_threadpool(
            viewer.workspace.add_dataset, str(upload.path),
            fields.get("name", "").strip() or safe_stem(upload.filename, "dataset"),
            project=fields.get("project") or None, task=task,
            label_column=fields.get("label_column", "").strip() or None,
            image_size=(size[0], size[1]) if size else None, splits=_splits(fields),
            text=_text_options(fields))
    except TinymlaasError as exc:
        return _datasets_page(request, viewer, exc.message, exc.http_status)
    finally:
        upload.path.unlink(missing_ok=True)
    return RedirectResponse(f"/datasets?added={dataset.id}", status_code=303)


def _text_options(fields: dict[str, str]) -> TextOptions | None:
    """The text fields of the upload form: None without a tokenizer model."""
    tokenizer = fields.get("tokenizer", "").strip()
    if not tokenizer:
        return None
    length = _ints(fields.get("max_length", ""), "max length", count=1,
                   most=MAX_TEXT_LENGTH) or [128]
    padding = fields.get("padding") or "max_length"
    if padding not in ("max_length", "longest"):
        raise InvalidInputError("padding: max_length or longest", {"field": "padding"})
    return TextOptions(tokenizer=tokenizer,
                       text_column=fields.get("text_column", "").strip() or "text",
                       text_pair_column=fields.get("text_pair_column", "").strip() or None,
                       max_length=length[0], padding=padding)  # type: ignore[arg-type]


@router.post("/datasets/builtin")
def add_builtin(request: Request, viewer: WebSession, source: Annotated[str, Form()] = "digits",
                name: Annotated[str, Form()] = "", project: Annotated[str, Form()] = "",
                csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    try:
        if source not in BUILTIN_DATASETS:  # never a path on the server
            raise InvalidInputError(f"{source[:100]!r} is not a built-in dataset "
                                    f"({', '.join(BUILTIN_DATASETS)})", {"field": "source"})
        dataset = viewer.workspace.add_dataset(source, name.strip() or None,
                                               project=project or None)
    except TinymlaasError as exc:
        return _datasets_page(request, viewer, exc.message, exc.http_status)
    return RedirectResponse(f"/datasets?added={dataset.id}", status_code=303)


@router.post("/datasets/site")
def add_site_dataset(request: Request, viewer: WebSession,
                     source: Annotated[str, Form(max_length=700)] = "",
                     name: Annotated[str, Form(max_length=100)] = "",
                     project: Annotated[str, Form(max_length=100)] = "",
                     task: Annotated[str, Form(max_length=40)] = "",
                     csrf_token: Annotated[str, Form()] = "") -> Response:
    """A file that stays at a site (``site://NAME/relative/path``): the site's worker
    describes it, and its bytes never reach the server. Waits for the site's answer; a
    server without a broker, a site without a live worker, a missing file or a path that
    leaves the site's data root shows its message on the page."""
    check_csrf(request, csrf_token)
    form = {"source": source, "name": name, "project": project, "task": task}
    try:
        source, name = source.strip(), name.strip()
        parse_site_source(source)  # never a path on the server
        if name and not re.match(NAME_PATTERN, name):
            raise InvalidInputError(f"name {name[:100]!r}: letters, digits, '.', '_' and '-' "
                                    "(starting with a letter or digit)", {"field": "name"})
        dataset = viewer.workspace.add_dataset(
            source, name or None, project=project or None,
            task=Task(task) if task in TASKS else None)
    except TinymlaasError as exc:
        return _datasets_page(request, viewer, exc.message, exc.http_status, site_form=form)
    return RedirectResponse(f"/datasets?added={dataset.id}", status_code=303)


# devices ------------------------------------------------------------------------------------

def _devices_page(request: Request, viewer: Viewer, studio: StudioDep,
                  errors: dict[str, str] | None = None, form: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:
    return render(request, "devices.html", {
        "devices": studio.services.list_devices(viewer.workspace.projects),
        "errors": errors or {},
        "form": form or {}, "categories": ["mcu", "sbc", "edge-gpu", "server", "phone"]},
        viewer=viewer, status_code=status_code)


@router.get("/devices")
def devices_page(request: Request, viewer: WebSession, studio: StudioDep) -> Response:
    return _devices_page(request, viewer, studio)


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@router.post("/devices")
def add_device(request: Request, viewer: WebSession, studio: StudioDep,
               name: Annotated[str, Form()] = "", title: Annotated[str, Form()] = "",
               category: Annotated[str, Form()] = "mcu", arch: Annotated[str, Form()] = "",
               clock_mhz: Annotated[str, Form()] = "", ram_kb: Annotated[str, Form()] = "",
               flash_kb: Annotated[str, Form()] = "", features: Annotated[str, Form()] = "",
               runtimes: Annotated[str, Form()] = "",
               csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    form = {"name": name, "title": title, "category": category, "arch": arch,
            "clock_mhz": clock_mhz, "ram_kb": ram_kb, "flash_kb": flash_kb,
            "features": features, "runtimes": runtimes}
    required = {"arch": arch.strip() or None}
    missing = {k: "required, e.g. cortex-m4" for k, v in required.items() if v is None}
    try:
        device = Device.model_validate({
            "name": name.strip(), "title": title.strip(), "category": category,
            "arch": arch.strip(), "clock_mhz": clock_mhz or 0, "ram_kb": ram_kb or 0,
            "flash_kb": flash_kb or 0, "features": _split(features),
            "runtimes": _split(runtimes) or ["c"], "custom": True,
            "project": viewer.workspace.project_id(None, write=True)})
        if missing:
            return _devices_page(request, viewer, studio, missing, form, 400)
        studio.services.add_device(device)
    except ValidationError as exc:
        errors = {str(e["loc"][0]): str(e["msg"]) for e in exc.errors() if e.get("loc")}
        return _devices_page(request, viewer, studio, {**missing, **errors}, form, 400)
    except TinymlaasError as exc:
        return _devices_page(request, viewer, studio, {"name": exc.message}, form,
                             exc.http_status)
    return RedirectResponse(f"/devices?added={device.name}#device-{device.name}",
                            status_code=303)


# transformers -------------------------------------------------------------------------------

@router.get("/transformers")
def transformers_page(request: Request, viewer: WebSession) -> Response:
    items = viewer.workspace.list_transformers()
    return render(request, "transformers.html", {
        "transformers": items, "fields": {t.name: param_fields(t.params_schema)
                                          for t in items}}, viewer=viewer)
