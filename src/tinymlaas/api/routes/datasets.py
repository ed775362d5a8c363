"""Datasets: streamed uploads, built-ins, Hugging Face imports, listing and download."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tinymlaas.api.common import AUTH_ERRORS, DATASET_DOWNLOAD, artifact_response
from tinymlaas.api.deps import SettingsDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import (
    DatasetBuiltinCreate,
    DatasetHubImport,
    DatasetPublic,
    DatasetSiteCreate,
    DeletionPublic,
    ErrorBody,
)
from tinymlaas.api.uploads import UPLOAD_BODY, receive_upload, safe_stem
from tinymlaas.domain import DatasetSplits, Task
from tinymlaas.domain.entities import MAX_CALIBRATION_SIZE, MAX_SEED, NAME_PATTERN
from tinymlaas.formats.datasets import MAX_IMAGE_SIDE
from tinymlaas.formats.hub import hub_download
from tinymlaas.formats.text_datasets import MAX_TEXT_LENGTH, TextOptions

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=AUTH_ERRORS)

ProjectQuery = Annotated[str | None, Query(description="Project id (default: all yours).")]
ForceQuery = Annotated[bool, Query(description="Also delete the runs that use it.")]


@router.get("", response_model=list[DatasetPublic], responses=PAGED)
def list_datasets(ws: WorkspaceDep, paging: PagingDep, project: ProjectQuery = None) -> object:
    """Datasets in the user's projects, oldest first, a page at a time."""
    return paging.send(ws.page_datasets(paging.limit, paging.after, project))


@router.post("", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED,
             openapi_extra=UPLOAD_BODY, responses={413: {"model": ErrorBody}})
async def upload_dataset(
    request: Request,
    ws: WorkspaceDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    project: ProjectQuery = None,
    task: Task | None = None,
    label_column: Annotated[str | None, Query(max_length=200)] = None,
    image_width: Annotated[int | None, Query(gt=0, le=MAX_IMAGE_SIDE)] = None,
    image_height: Annotated[int | None, Query(gt=0, le=MAX_IMAGE_SIDE)] = None,
    test_fraction: Annotated[float, Query(gt=0, lt=1, allow_inf_nan=False)] = 0.2,
    calibration_size: Annotated[int, Query(gt=0, le=MAX_CALIBRATION_SIZE)] = 256,
    seed: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    filename: Annotated[str | None, Query(
        max_length=255, description="File name of a raw (octet-stream) body.")] = None,
    tokenizer: Annotated[str | None, Query(
        max_length=200, description="Text data (.csv, .jsonl): the model (id or name) whose "
        "tokenizer tokenizes it, one array per model input.")] = None,
    text_column: Annotated[str, Query(min_length=1, max_length=200,
                                      description="Text data: the column of text.")] = "text",
    text_pair_column: Annotated[str | None, Query(
        min_length=1, max_length=200, description="Text data: a second text per row.")] = None,
    max_length: Annotated[int, Query(ge=2, le=MAX_TEXT_LENGTH,
                                     description="Text data: tokens per sample.")] = 128,
    padding: Annotated[Literal["max_length", "longest"], Query(
        description="Text data: pad to max_length, or to the longest sample.")]
    = "max_length",
) -> object:
    """Upload and register an .npz (X, y), a .csv or a .zip of image folders; with
    ``tokenizer``, a .csv or .jsonl of text tokenized with that model's tokenizer (without
    ``label_column`` it is unlabelled: for calibration and fidelity)."""
    ws.project_id(project, write=True)
    text = TextOptions(tokenizer=tokenizer, text_column=text_column,
                       text_pair_column=text_pair_column, max_length=max_length,
                       padding=padding) if tokenizer else None
    limit = min(settings.max_upload_bytes, settings.max_dataset_bytes)
    size = (image_width, image_height) if image_width and image_height else None
    splits = DatasetSplits(test_fraction=test_fraction, calibration_size=calibration_size,
                           seed=seed)
    upload = await receive_upload(request, settings.home / "uploads", limit, filename)
    try:
        return await run_in_threadpool(
            ws.add_dataset, str(upload.path), name or safe_stem(upload.filename, "dataset"),
            project=project, task=task, label_column=label_column, image_size=size,
            splits=splits, text=text)
    finally:
        upload.path.unlink(missing_ok=True)


@router.post("/builtin", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED)
def add_builtin(body: DatasetBuiltinCreate, ws: WorkspaceDep) -> object:
    """Register a built-in dataset (``digits``)."""
    return ws.add_dataset(body.source, body.name, project=body.project,
                          splits=DatasetSplits(test_fraction=body.test_fraction,
                                               calibration_size=body.calibration_size,
                                               seed=body.seed))


@router.post("/site", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED,
             responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def add_site_dataset(body: DatasetSiteCreate, ws: WorkspaceDep) -> object:
    """Register a file that stays at a site (``site://NAME/relative/path``): a worker of
    the site reads it under its data root and reports its shape, classes and sha256; its
    bytes never reach the server. Runs on it run at that site. 409 when the server has no
    broker or the site no live worker; 404 when the site (or the file there) is not found;
    503 when the site does not answer in time."""
    ws.project_id(body.project, write=True)
    return ws.add_dataset(body.source, body.name, project=body.project, task=body.task,
                          label_column=body.label_column, image_size=body.image_size,
                          splits=DatasetSplits(test_fraction=body.test_fraction,
                                               calibration_size=body.calibration_size,
                                               seed=body.seed))


@router.post("/hub", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED,
             responses={413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def import_dataset(body: DatasetHubImport, ws: WorkspaceDep, settings: SettingsDep) -> object:
    """Register a dataset file from a Hugging Face dataset repo (text with ``tokenizer``, as
    for uploads)."""
    ws.project_id(body.project, write=True)
    path = hub_download(body.repo_id, body.filename, revision=body.revision,
                        repo_type="dataset", max_bytes=settings.max_dataset_bytes)
    return ws.add_dataset(str(path), body.name or safe_stem(path.name, "dataset"),
                          project=body.project, task=body.task, label_column=body.label_column,
                          image_size=body.image_size,
                          splits=DatasetSplits(test_fraction=body.test_fraction,
                                               calibration_size=body.calibration_size,
                                               seed=body.seed),
                          text=TextOptions(tokenizer=body.tokenizer, text_column=body.text_column,
                                           text_pair_column=body.text_pair_column,
                                           max_length=body.max_length, padding=body.padding)
                          if body.tokenizer else None)


@router.get("/{ref}", response_model=DatasetPublic)
def get_dataset(ref: str, ws: WorkspaceDep) -> object:
    """One dataset, by id or name."""
    return ws.get_dataset(ref)


@router.get("/{ref}/file", response_class=FileResponse, responses=DATASET_DOWNLOAD)
def download_dataset(ref: str, ws: WorkspaceDep) -> FileResponse:
    """The dataset in its canonical form (an .npz of X and y), named after the dataset
    (identical content is stored once: the stored blob's first name may be another's)."""
    artifact, path = ws.dataset_file(ref)
    return artifact_response(artifact, path)


@router.delete("/{ref}", response_model=DeletionPublic)
def delete_dataset(ref: str, ws: WorkspaceDep, force: ForceQuery = False) -> object:
    """Delete the dataset (409 while runs use it, unless ``force`` deletes them too); the
    artifacts nothing else uses are freed."""
    return ws.delete_dataset(ref, force=force)
