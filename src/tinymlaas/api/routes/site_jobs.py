"""A site worker's side of a step (site token): the broker it listens to, then for each
job: claim an attempt, renew its lease with progress, post the result. A duplicate message
(a job held alive by another worker, or ended) gets 409 and is dropped by the worker."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from tinymlaas.api.common import AUTH_ERRORS, errors
from tinymlaas.api.deps import StudioDep
from tinymlaas.api.routes.sites import SiteTokenDep
from tinymlaas.api.site_schemas import (
    JobAttempt,
    JobClaim,
    JobFinished,
    JobHeartbeat,
    JobLease,
    JobResultPost,
    WorkerConfig,
)
from tinymlaas.service.site_jobs import SiteJobs

__all__ = ["router"]

router = APIRouter(prefix="/sites", tags=["sites"], responses=AUTH_ERRORS)
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]


@router.get("/{name}/worker-config", response_model=WorkerConfig,
            responses=errors(401, 404, 409, 500))
def worker_config(name: str, site: SiteTokenDep, studio: StudioDep) -> object:
    """The broker and queue of the site's jobs (site token). 409 when this server has no
    broker."""
    return SiteJobs(studio.services).worker_config(site)


@router.post("/{name}/jobs/{job_id}/claim", response_model=JobAttempt,
             responses=errors(400, 401, 404, 409, 422, 500))
def claim_job(name: str, job_id: JobId, body: JobClaim, site: SiteTokenDep,
              studio: StudioDep) -> object:
    """Take the next attempt of one of the site's jobs (site token): the job to run, with
    signed URLs of its inputs. 409: another worker holds it alive, or it has ended; drop
    the message."""
    jobs = SiteJobs(studio.services)
    attempt = jobs.claim(site, job_id, body.worker_id)
    return JobAttempt(job_id=job_id, attempt=attempt.attempt, lease_ttl_s=jobs.ttl_s,
                      job=jobs.job_of(attempt))


@router.post("/{name}/jobs/{job_id}/heartbeat", response_model=JobLease,
             responses=errors(400, 401, 404, 409, 422, 500))
def job_heartbeat(name: str, job_id: JobId, body: JobHeartbeat, site: SiteTokenDep,
                  studio: StudioDep) -> object:
    """Renew the lease of the worker's attempt, with its progress (site token). 409: the
    attempt is no longer the worker's (cancelled, or taken over); stop the step."""
    expires = SiteJobs(studio.services).heartbeat(site, job_id, body.worker_id, body.attempt,
                                                  body.progress, body.message)
    return JobLease(lease_expires_at=expires)


@router.post("/{name}/jobs/{job_id}/result", response_model=JobFinished,
             responses=errors(400, 401, 404, 409, 422, 500))
def job_result(name: str, job_id: JobId, body: JobResultPost, site: SiteTokenDep,
               studio: StudioDep) -> object:
    """The attempt's result (site token); a successful one's output is uploaded first
    through a blob URL (400 otherwise). 409: the attempt is no longer the worker's."""
    row = SiteJobs(studio.services).finish(site, job_id, body.worker_id, body.attempt,
                                           body.result)
    return JobFinished(job_id=row.job_id, status=row.status)
