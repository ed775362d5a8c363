"""Request and response bodies of the sites and blob routes (pydantic only: the SDK and a
site's worker import them without the server stack)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinymlaas.contracts.jobs import Job, JobResult
from tinymlaas.domain.sites import Site, SiteWorker

__all__ = [
    "BlobStored",
    "BlobUrl",
    "BlobUrlRequest",
    "Heartbeat",
    "HeartbeatAnswer",
    "JobAttempt",
    "JobClaim",
    "JobFinished",
    "JobHeartbeat",
    "JobLease",
    "JobResultPost",
    "Site",
    "SiteCreate",
    "SiteCreated",
    "SiteWorker",
    "WorkerConfig",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class SiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Unique within the project.")
    project: str | None = Field(default=None, max_length=100,
                                description="Project id (default: your own).")


class SiteCreated(Site):
    """A new site and its token: shown this once (the server keeps only its sha256)."""

    token: str


class Heartbeat(BaseModel):
    """A site worker saying it is alive, from where, and which steps it runs."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
    hostname: str = Field(min_length=1, max_length=255)
    running_steps: list[str] = Field(default_factory=list, max_length=256)


class HeartbeatAnswer(SiteWorker):
    """The worker as recorded, and the site's queued jobs it may take outside its step
    slots (dataset descriptions: short, and waited on by a user)."""

    describe_jobs: list[str] = Field(default_factory=list, description="Ids of queued jobs "
                                     "that describe a dataset file of the site: claim them "
                                     "like any job.")


class BlobUrlRequest(BaseModel):
    """A signed URL a site's worker uploads the output of the job's attempt it holds to
    (its sha256 computed first)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
    attempt: int = Field(ge=1, le=1000)
    worker_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
    method: Literal["PUT"] = "PUT"
    ttl_s: int = Field(default=3600, ge=1, le=24 * 3600)


class BlobUrl(BaseModel):
    url: str
    expires_at: datetime


class BlobStored(BaseModel):
    sha256: str
    size: int


# a site worker's jobs ------------------------------------------------------------------------

_WORKER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


class WorkerConfig(BaseModel):
    """What a site's worker needs from the server: the broker, its site's queue and how
    long a step's lease lives without a heartbeat."""

    site_id: str
    site: str
    queue: str
    broker_url: str
    lease_ttl_s: float


class JobClaim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=_WORKER_ID)


class JobAttempt(BaseModel):
    """An attempt of a job given to a worker: the job, with signed URLs of what it reads;
    the worker renews the lease every third of its life."""

    job_id: str
    attempt: int
    lease_ttl_s: float
    job: Job


class JobHeartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=_WORKER_ID)
    attempt: int = Field(ge=1, le=1000)
    progress: float | None = Field(default=None, ge=0, le=1)
    message: str | None = Field(default=None, max_length=500)


class JobLease(BaseModel):
    lease_expires_at: datetime


class JobResultPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(pattern=_WORKER_ID)
    attempt: int = Field(ge=1, le=1000)
    result: JobResult


class JobFinished(BaseModel):
    job_id: str
    status: str
