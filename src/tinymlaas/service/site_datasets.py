"""Datasets that stay at a site: ``site://NAME/relative/path``.

Registering one asks the site: a :class:`~tinymlaas.contracts.jobs.DescribeJob` goes to the
site's queue, a worker there reads the file under its data root and reports what it holds
(:mod:`tinymlaas.worker.site_data`). The server records that description, the canonical
artifact's sha256 and size (an artifact record without bytes: they are never stored here)
and where the site's workers read the file. Every run on the dataset runs at its site.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from tinymlaas.contracts.jobs import DescribeJob, SiteData
from tinymlaas.domain import Artifact, ArtifactKind, Dataset, DatasetSplits, Task
from tinymlaas.domain.sites import MAX_SITE_PATH, SITE_SCHEME, SiteDataset
from tinymlaas.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
    TinymlaasError,
    UnsafeInputError,
)
from tinymlaas.store.metadata import new_id

if TYPE_CHECKING:
    from tinymlaas.service.services import Services

__all__ = ["DESCRIBE_TIMEOUT_S", "add_site_dataset", "parse_site_source"]

#: How long a site's worker has to read and describe a dataset file.
DESCRIBE_TIMEOUT_S = 600.0
#: Registrations a project (and the whole server) may wait on at once: each holds a request
#: thread until its site answers, so a site that never does cannot take every thread.
DESCRIBES_PER_PROJECT = 2
DESCRIBES_IN_FLIGHT = 8
_in_flight: dict[str, int] = {}
_in_flight_lock = threading.Lock()
#: The site's errors that keep their kind (and HTTP status) on the server.
_ERRORS: dict[str, type[TinymlaasError]] = {
    cls.__name__: cls for cls in (NotFoundError, PayloadTooLargeError, UnsafeInputError)}


def parse_site_source(source: str) -> tuple[str, str]:
    """``site://NAME/relative/path`` as (site name, relative path).

    Raises:
        InvalidInputError: not that form, or a path that could leave the data root
            (``..``, ``.``, empty parts, backslashes, control characters).
    """
    name, _, path = source.removeprefix(SITE_SCHEME).partition("/")
    if not source.startswith(SITE_SCHEME) or not name or not path:
        raise InvalidInputError(f"{source[:200]!r}: a site's dataset is "
                                "site://NAME/relative/path, e.g. site://factory/data.npz",
                                {"field": "source"})
    if (len(path) > MAX_SITE_PATH or "\\" in path or any(ord(c) < 32 for c in path)
            or any(part in {"", ".", ".."} for part in path.split("/"))):
        raise InvalidInputError(f"{path[:100]!r} is not a plain relative path under the "
                                "site's data root (no '..', '.', empty parts, backslashes "
                                f"or control characters; at most {MAX_SITE_PATH} characters)",
                                {"field": "source"})
    return name, path


class _Description(BaseModel):
    """What a site's worker reports of a dataset file (checked: it comes from outside)."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source_bytes: int = Field(ge=0)
    source_format: Literal["npz", "csv", "image-zip"]
    task: Task
    num_samples: int = Field(gt=0)
    feature_shape: list[int] = Field(max_length=16)
    num_classes: int | None = Field(default=None, ge=1)
    class_names: list[str] = Field(default_factory=list, max_length=1_000_000)
    fields: dict[str, tuple[Annotated[str, Field(pattern=r"^[<>|=]?[biuf][1-8]$")],
                            Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=16)]]
                 ] | None = Field(default=None, max_length=256)


@contextlib.contextmanager
def _slot(project: str) -> Iterator[None]:
    """One of the bounded waits for a site's answer (see :data:`DESCRIBES_PER_PROJECT`)."""
    with _in_flight_lock:
        if (_in_flight.get(project, 0) >= DESCRIBES_PER_PROJECT
                or sum(_in_flight.values()) >= DESCRIBES_IN_FLIGHT):
            raise RateLimitedError("other datasets are being described by their sites right "
                                   "now; register this one when they are done",
                                   {"in_flight": _in_flight.get(project, 0)})
        _in_flight[project] = _in_flight.get(project, 0) + 1
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight[project] -= 1
            if not _in_flight[project]:
                del _in_flight[project]


def add_site_dataset(services: Services, source: str, name: str | None, *,
                     task: Task | None, label_column: str | None,
                     image_size: tuple[int, int] | None, splits: DatasetSplits,
                     project: str, timeout_s: float = DESCRIBE_TIMEOUT_S) -> Dataset:
    """Register the file ``source`` (``site://NAME/path``) that stays at site NAME.

    Raises:
        InvalidInputError: a malformed source, or a file the site's worker cannot read as a
            dataset (NotFoundError, PayloadTooLargeError, UnsafeInputError keep their kind).
        ConflictError: no broker here, or no live worker at the site.
        ServiceUnavailableError: the site did not answer within ``timeout_s``.
        RateLimitedError: the project (or the server) waits on as many sites as it may.
    """
    site_name, path = parse_site_source(source)
    site = services.live_site(site_name, project)
    celery = services.site_executor
    assert celery is not None  # live_site refuses a server without a broker
    dataset_id = new_id("data")
    job = DescribeJob(job_id=f"{dataset_id}-describe", project=project,
                      data=SiteData(path=path, task=task.value if task else None,
                                    label_column=label_column, image_size=image_size))
    with _slot(project):
        handle = celery.submit(job, site.id, dataset_id)
        timer = threading.Timer(timeout_s, celery.cancel, [handle])
        timer.start()
        try:
            result = celery.wait(handle)
        finally:
            timer.cancel()
    where = f"site {site.name!r}"
    if not result.ok:
        if result.error_type == "Cancelled":
            raise ServiceUnavailableError(f"{where} did not describe {path!r} within "
                                          f"{timeout_s:g} s; is its worker busy?")
        kind = _ERRORS.get(result.error_type or "", InvalidInputError)
        raise kind(f"{where} could not read {path!r} as a dataset: {result.error}",
                   {"field": "source", "site": site.name})
    try:
        found = _Description.model_validate(result.metrics)
    except ValidationError as exc:
        raise InvalidInputError(f"{where} described {path!r} in a way this server does not "
                                f"take: {exc.errors()[0]['msg']}", {"site": site.name}) from None
    name = name or PurePosixPath(path).stem
    services.meta.add_artifact(Artifact(sha256=found.sha256, kind=ArtifactKind.dataset_npz,
                                        size_bytes=found.size, filename=f"{name}.npz"))
    return services.meta.add_dataset(Dataset(
        id=dataset_id, name=name, project=project, artifact_sha=found.sha256,
        source_format=found.source_format, task=found.task,
        num_samples=found.num_samples, feature_shape=found.feature_shape,
        num_classes=found.num_classes, class_names=found.class_names, splits=splits,
        location=f"{SITE_SCHEME}{site.name}/{path}",
        site=SiteDataset(site_id=site.id, path=path, task=task.value if task else None,
                         label_column=label_column, image_size=image_size,
                         source_sha256=found.source_sha256, source_bytes=found.source_bytes,
                         fields=found.fields)))
