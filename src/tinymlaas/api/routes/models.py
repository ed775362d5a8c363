"""Models: streamed uploads, Hugging Face imports, listing and download."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tinymlaas.api.common import AUTH_ERRORS, MODEL_DOWNLOAD, artifact_response
from tinymlaas.api.deps import SettingsDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import DeletionPublic, ErrorBody, InputDim, ModelHubImport, ModelPublic
from tinymlaas.api.uploads import MODEL_UPLOAD_BODY, receive_upload, safe_stem, staged_model
from tinymlaas.domain import Task
from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.errors import InvalidInputError
from tinymlaas.formats.hub import hub_download

router = APIRouter(prefix="/models", tags=["models"], responses=AUTH_ERRORS)

ProjectQuery = Annotated[str | None, Query(description="Project id (default: all yours).")]
ForceQuery = Annotated[bool, Query(description="Also delete the runs that use it.")]

@router.get("", response_model=list[ModelPublic], responses=PAGED)
def list_models(ws: WorkspaceDep, paging: PagingDep, project: ProjectQuery = None) -> object:
    """Models in the user's projects, oldest first, a page at a time."""
    return paging.send(ws.page_models(paging.limit, paging.after, project))


@router.post("", response_model=ModelPublic, status_code=status.HTTP_201_CREATED,
             openapi_extra=MODEL_UPLOAD_BODY,
             responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}})
async def upload_model(
    request: Request,
    ws: WorkspaceDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    project: ProjectQuery = None,
    task: Task = Task.classification,
    input_shape: Annotated[list[InputDim] | None, Query(
        max_length=8, description="Input shape without batch (needed for TorchScript).")]
    = None,
    description: Annotated[str, Query(max_length=2000)] = "",
    filename: Annotated[str | None, Query(
        max_length=255, description="File name of a raw (octet-stream) body.")] = None,
) -> object:
    """Upload and register an ONNX, torch.export (.pt2) or TorchScript file.

    The body streams to disk with a size limit (413) and is validated before anything is
    registered; pickles and unsafe files are refused with a 4xx. An ONNX model whose
    weights are in external-data files comes as ``multipart/form-data`` with one
    ``external_data`` part per file, named exactly as the model references it (422 when one
    is missing or not referenced).
    """
    ws.project_id(project, write=True)
    limit = min(settings.max_upload_bytes, settings.max_model_bytes)
    upload = await receive_upload(request, settings.home / "uploads", limit, filename,
                                  sidecars=True)

    def register() -> object:
        with staged_model(upload) as path:
            return ws.add_model(path, name or safe_stem(upload.filename, "model"),
                                project=project, task=task, input_shape=input_shape,
                                description=description)

    try:
        return await run_in_threadpool(register)
    finally:
        upload.discard()


@router.post("/hub", response_model=ModelPublic, status_code=status.HTTP_201_CREATED,
             responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody},
                        503: {"model": ErrorBody}})
def import_model(body: ModelHubImport, ws: WorkspaceDep, settings: SettingsDep) -> object:
    """Register a model from a Hugging Face repo (honours HF_ENDPOINT and the offline cache).

    With ``filename``, that file is registered as it is. Without it, the repo's config,
    safetensors weights and tokenizer are fetched and exported to ONNX, the tokenizer and
    config kept in the file (pickled ``.bin`` weights and remote code are refused: 4xx). A
    Hub that cannot be reached is a 503, never a 404.
    """
    ws.project_id(body.project, write=True)
    if body.filename is None:
        if body.input_shape is not None:
            raise InvalidInputError("input_shape is for a TorchScript file; a whole repo is "
                                    "exported with dynamic batch and sequence")
        return ws.add_hf_model(f"hf:{body.repo_id}", body.name, revision=body.revision,
                               project=body.project, task=body.task,
                               description=body.description)
    path = hub_download(body.repo_id, body.filename, revision=body.revision,
                        max_bytes=settings.max_model_bytes)
    return ws.add_model(path, body.name or safe_stem(path.name, "model"),
                        project=body.project, task=body.task or Task.classification,
                        input_shape=body.input_shape,
                        description=body.description or f"hf://{body.repo_id}/{body.filename}")


@router.get("/{ref}", response_model=ModelPublic)
def get_model(ref: str, ws: WorkspaceDep) -> object:
    """One model, by id or name."""
    return ws.get_model(ref)


@router.get("/{ref}/file", response_class=FileResponse, responses=MODEL_DOWNLOAD)
def download_model(ref: str, ws: WorkspaceDep) -> FileResponse:
    """The registered model file, named after the model."""
    artifact, path = ws.model_file(ref)
    return artifact_response(artifact, path)


@router.delete("/{ref}", response_model=DeletionPublic)
def delete_model(ref: str, ws: WorkspaceDep, force: ForceQuery = False) -> object:
    """Delete the model (409 while runs start from it, unless ``force`` deletes them too); the
    artifacts nothing else uses are freed."""
    return ws.delete_model(ref, force=force)
