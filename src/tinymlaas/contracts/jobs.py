"""What crosses the boundary between the engine and an executor: typed, versioned jobs and
their results. No path of the server's disk is in them: inputs and outputs are
:class:`ArtifactRef` (content addresses), and each executor turns them into files where the
step runs (the local executor from the local artifact store; a remote worker would fetch
them through the API) and stores what the step made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DESCRIBE_SUFFIX", "ArtifactRef", "DatasetRef", "DescribeJob", "EvaluateJob", "Job",
           "JobResult", "ProgressEvent", "SiteData", "TransformJob", "map_artifacts",
           "with_urls"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactRef(_Message):
    """An artifact by content: its sha256, kind and size, the name it goes by, and where a
    remote worker fetches it (``url``; none for a local executor)."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: str
    size: int | None = Field(default=None, ge=0)
    name: str | None = None
    url: str | None = None


class SiteData(_Message):
    """A dataset file at the job's site: where its workers read it (``path``, relative to
    their data root) and the options that turn it into the canonical arrays."""

    path: str = Field(min_length=1, max_length=500)
    task: str | None = None
    label_column: str | None = Field(default=None, max_length=200)
    image_size: tuple[int, int] | None = None


class DatasetRef(_Message):
    """The data a step reads: a canonical dataset artifact, its task, splits and classes.
    With ``site``, the data stays at the job's site: its worker makes the artifact from the
    file there (and checks its sha256); nothing is fetched."""

    artifact: ArtifactRef
    task: str
    splits: dict[str, Any]
    num_classes: int | None = None
    site: SiteData | None = None


class TransformJob(_Message):
    """Apply one transformer to one artifact."""

    type: Literal["transform"] = "transform"
    spec_version: Literal[1] = 1
    job_id: str
    project: str
    transformer: str
    params: dict[str, Any]
    input: ArtifactRef
    input_specs: list[dict[str, Any]] = Field(default_factory=list)
    dataset: DatasetRef | None = None
    device: dict[str, Any] | None = None
    #: The step signs with the project's key: only an executor that holds it can run it.
    signs: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)


class EvaluateJob(_Message):
    """Measure one artifact on a dataset split (against a reference's outputs)."""

    type: Literal["evaluate"] = "evaluate"
    spec_version: Literal[1] = 1
    job_id: str
    project: str
    task: str
    input: ArtifactRef
    input_specs: list[dict[str, Any]] = Field(default_factory=list)
    dataset: DatasetRef
    split: str = "test"
    device: dict[str, Any] | None = None
    reference: ArtifactRef | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)


#: How a describe job's id ends.
DESCRIBE_SUFFIX = "-describe"


class DescribeJob(_Message):
    """Read a dataset file at the site and report what it holds (its result's ``metrics``:
    the canonical artifact's sha256 and size, the file's sha256 and size, the format, task,
    samples, feature shape, classes and per-input arrays); its bytes stay there."""

    type: Literal["describe-dataset"] = "describe-dataset"
    spec_version: Literal[1] = 1
    #: Ends in :data:`DESCRIBE_SUFFIX`: a site's workers are told of queued describe jobs
    #: with their heartbeat too, so a worker busy with long steps still answers them.
    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,180}-describe$")
    project: str
    data: SiteData


Job = Annotated[TransformJob | EvaluateJob | DescribeJob, Field(discriminator="type")]


def map_artifacts(job: TransformJob | EvaluateJob,
                  change: Callable[[ArtifactRef], ArtifactRef]) -> TransformJob | EvaluateJob:
    """``job`` with ``change(ref)`` in place of each artifact it reads: its input, its
    dataset's (unless the dataset is at the site), an evaluation's reference."""
    update: dict[str, Any] = {"input": change(job.input)}
    if job.dataset is not None and job.dataset.site is None:
        update["dataset"] = job.dataset.model_copy(
            update={"artifact": change(job.dataset.artifact)})
    if isinstance(job, EvaluateJob) and job.reference is not None:
        update["reference"] = change(job.reference)
    return job.model_copy(update=update)


def with_urls(job: TransformJob | EvaluateJob | DescribeJob,
              url_for: Callable[[str], str]) -> TransformJob | EvaluateJob | DescribeJob:
    """``job`` with the URL ``url_for(sha256)`` of each artifact it reads: what a remote
    worker fetches them by."""
    if isinstance(job, DescribeJob):  # it reads only the site's own file
        return job
    return map_artifacts(job, lambda ref: ref.model_copy(update={"url": url_for(ref.sha256)}))


class JobResult(_Message):
    """How a job ended: its stored output and metrics, or the error, and its log's tail."""

    job_id: str
    ok: bool
    output: ArtifactRef | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    log: str = ""


class ProgressEvent(_Message):
    job_id: str
    fraction: float = Field(ge=0, le=1)
    message: str = ""
