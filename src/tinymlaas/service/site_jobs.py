"""What a site's workers do through the API with the site's token: learn where the broker
is, claim a job's attempt, renew its lease with their progress, get a URL to upload its
output, and post its result.

A site's token opens no blob by itself: the GET URLs of a job's inputs come with its claim,
and a PUT URL is signed only for the output of an attempt the asking worker holds, one
output per attempt (the PUT's size limit, ``TINYMLAAS_MAX_UPLOAD_BYTES``, applies), so a
token cannot fill the server's disk with blobs of its choosing.

Every call names the site the token opens; a job of another site is "not found". A claim,
a heartbeat or a result from a worker that no longer holds the job's current attempt (it
expired and was taken over, or the job was cancelled or has ended) is a conflict: the
worker drops the message or stops the step.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from tinymlaas.contracts.jobs import (
    DESCRIBE_SUFFIX,
    DescribeJob,
    EvaluateJob,
    Job,
    JobResult,
    TransformJob,
    with_urls,
)
from tinymlaas.domain.sites import Site
from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.executors.celery import job_changed
from tinymlaas.executors.queues import queue_of
from tinymlaas.service.blobs import BlobSigner
from tinymlaas.service.services import Services
from tinymlaas.store.attempts import Attempt, AttemptStore

__all__ = ["JOB_URL_TTL_S", "SiteJobs"]

#: How long the input URLs handed out with a claimed job stay valid (a worker fetches its
#: inputs when it starts the job; an interrupted download resumes within this time).
JOB_URL_TTL_S = 3600
_JOB: TypeAdapter[TransformJob | EvaluateJob | DescribeJob] = TypeAdapter(Job)


class SiteJobs:
    """The site endpoints' use cases on the services' database."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.attempts = AttemptStore(services.meta)
        self.ttl_s = services.settings.site_lease_ttl_s

    def worker_config(self, site: Site) -> dict[str, Any]:
        """What a worker of ``site`` needs: the broker, its queue and the lease's life."""
        broker = self.services.settings.broker_url
        if not broker:
            raise ConflictError("this server has no broker: start it with "
                                "TINYMLAAS_BROKER_URL (or serve --broker URL)")
        return {"site_id": site.id, "site": site.name, "queue": queue_of(site.id),
                "broker_url": broker, "lease_ttl_s": self.ttl_s}

    def describe_jobs(self, site: Site) -> list[str]:
        """The site's queued dataset descriptions, which its workers take with their
        heartbeat even while their step slots are busy (a user waits on each)."""
        return self.attempts.queued_of_site(site.id, DESCRIBE_SUFFIX)

    def _job(self, site: Site, job_id: str) -> Attempt:
        row = self.attempts.find(job_id, site.id)
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found", {"kind": "job", "ref": job_id})
        return row

    def claim(self, site: Site, job_id: str, worker_id: str) -> Attempt:
        """The job's next attempt for ``worker_id``; :meth:`job_of` is what it runs.

        Raises:
            ConflictError: another worker holds a live lease on it, or it has ended: the
                message is a duplicate, to be acknowledged and dropped.
        """
        self._job(site, job_id)
        claimed = self.attempts.claim(job_id, site.id, worker_id, self.ttl_s)
        if claimed is None:
            current = self.attempts.get(job_id)
            why = ("has ended" if current.finished else
                   f"is held by worker {current.worker_id} (attempt {current.attempt})"
                   if current.status == "running" else "has no attempt left")
            raise ConflictError(f"job {job_id} {why}; drop this message",
                                {"job": job_id, "status": current.status})
        return claimed

    def job_of(self, attempt: Attempt) -> TransformJob | EvaluateJob:
        """The claimed attempt's job, with URLs of what it reads signed for an hour: the
        broker's messages carry only job ids, so the job (and access to its inputs) goes
        only to a worker holding the site's token."""
        signer = BlobSigner.for_home(self.services.settings.home)
        return with_urls(_JOB.validate_python(attempt.job),
                         lambda sha: signer.sign(sha, "GET", ttl_s=JOB_URL_TTL_S))

    def heartbeat(self, site: Site, job_id: str, worker_id: str, attempt: int,
                  progress: float | None, message: str | None) -> datetime:
        """Renew the attempt's lease; returns its new expiry."""
        self._job(site, job_id)
        if not self.attempts.renew(job_id, site.id, worker_id, attempt, self.ttl_s,
                                   progress, message):
            raise ConflictError(f"attempt {attempt} of job {job_id} is no longer this "
                                "worker's (cancelled, ended, or taken over after its lease "
                                "expired); stop it", {"job": job_id})
        job_changed()  # its progress, to the run's live view
        return datetime.now(UTC) + timedelta(seconds=self.ttl_s)

    def upload_url(self, site: Site, job_id: str, worker_id: str, attempt: int,
                   sha256: str, ttl_s: int, base_url: str = "") -> str:
        """A signed PUT URL for the output ``sha256`` of the worker's attempt.

        Raises:
            NotFoundError: the job is not one of the site's.
            ConflictError: the attempt is not this worker's (ended, cancelled, or taken
                over), or it already named another output.
        """
        self._job(site, job_id)
        if not self.attempts.bind_output(job_id, site.id, worker_id, attempt, sha256):
            current = self.attempts.get(job_id)
            held = (current.worker_id == worker_id and current.attempt == attempt
                    and not current.finished)
            why = (f"already uploads output {(current.output_sha256 or '')[:12]}; an "
                   "attempt has one output" if held else
                   "is no longer this worker's (ended, cancelled, or taken over)")
            raise ConflictError(f"attempt {attempt} of job {job_id} {why}; no upload URL",
                                {"job": job_id, "status": current.status})
        return BlobSigner.for_home(self.services.settings.home).sign(
            sha256, "PUT", ttl_s=ttl_s, base_url=base_url)

    def finish(self, site: Site, job_id: str, worker_id: str, attempt: int,
               result: JobResult) -> Attempt:
        """Record the attempt's result; its output must have been uploaded first, through
        the attempt's upload URL."""
        row = self._job(site, job_id)
        if result.job_id != job_id:
            raise InvalidInputError("the result names another job", {"field": "result"})
        if result.ok and row.job.get("type") != "describe-dataset":  # that one reports only
            if result.output is None:
                raise InvalidInputError("a successful result has an output",
                                        {"field": "result"})
            if (result.output.sha256 != row.output_sha256
                    or not self.services.artifacts.exists(result.output.sha256)):
                raise InvalidInputError(f"output {result.output.sha256[:12]} was not uploaded; "
                                        "upload it through this attempt's blob URL first",
                                        {"field": "result"})
        body = result.model_dump(mode="json")
        if body.get("output"):
            body["output"]["url"] = None
        if not self.attempts.finish(job_id, site.id, worker_id, attempt, body):
            raise ConflictError(f"attempt {attempt} of job {job_id} is no longer this "
                                "worker's; its result was not recorded", {"job": job_id})
        job_changed()
        return self.attempts.get(job_id)
