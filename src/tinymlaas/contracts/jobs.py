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

__all__ = ["ArtifactRef", "DatasetRef", "EvaluateJob", "Job", "JobResult", "ProgressEvent",
           "TransformJob", "map_artifacts", "with_urls"]


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


class DatasetRef(_Message):
    """The data a step reads: a canonical dataset artifact, its task, splits and classes."""

    artifact: ArtifactRef
    task: str
    splits: dict[str, Any]
    num_classes: int | None = None


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


Job = Annotated[TransformJob | EvaluateJob, Field(discriminator="type")]


def map_artifacts(job: TransformJob | EvaluateJob,
                  change: Callable[[ArtifactRef], ArtifactRef]) -> TransformJob | EvaluateJob:
    """``job`` with ``change(ref)`` in place of each artifact it reads: its input, its
    dataset's, an evaluation's reference."""
    update: dict[str, Any] = {"input": change(job.input)}
    if job.dataset is not None:
        update["dataset"] = job.dataset.model_copy(
            update={"artifact": change(job.dataset.artifact)})
    if isinstance(job, EvaluateJob) and job.reference is not None:
        update["reference"] = change(job.reference)
    return job.model_copy(update=update)


def with_urls(job: TransformJob | EvaluateJob,
              url_for: Callable[[str], str]) -> TransformJob | EvaluateJob:
    """``job`` with the URL ``url_for(sha256)`` of each artifact it reads: what a remote
    worker fetches them by."""
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
