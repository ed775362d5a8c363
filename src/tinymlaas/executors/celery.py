"""The Celery executor: the jobs of a run made with a site go to that site's workers.

Each site has its own queue (:func:`queue_of`) on the broker (RabbitMQ, or Redis). The
server only publishes: there is no result backend. A worker takes a message, claims the
job's next attempt through the API with the site's token, renews the attempt's lease with
a heartbeat that carries its progress, and posts the :class:`JobResult` (its output
uploaded first through a signed URL). All of that lands in the ``job_attempts`` table
(:mod:`tinymlaas.store.attempts`), which :meth:`CeleryExecutor.wait` watches.

Inputs travel as :class:`~tinymlaas.contracts.jobs.ArtifactRef` with a signed GET URL
(a path under the server, which the worker resolves against the address it reaches the
server at); no path of the server's disk is in a message.

Leases, not the broker, decide who runs a job. A message the broker redelivers (a worker
was killed, or a long step outlived RabbitMQ's ``consumer_timeout``) finds the job held by
a live lease, or finished, and the worker drops it. The waiting server thread is the
reaper of its job: an attempt whose lease expired is queued again (a new message) while
attempts are left, then the job fails and says why; a job that no worker of its site takes
within the queue timeout (no live worker consumes the site's queue) fails and says so. A
job rerun after a server restart has the same id (the step key is in it), so a job still
running at the site is watched again, not started twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from tinymlaas.contracts.jobs import (
    EvaluateJob,
    JobResult,
    ProgressEvent,
    TransformJob,
)
from tinymlaas.errors import ServiceUnavailableError
from tinymlaas.executors.base import Executor, JobHandle, JobStatus, ProgressCallback
from tinymlaas.executors.queues import TASK_NAME, celery_app, queue_of
from tinymlaas.store.attempts import Attempt, AttemptStore

__all__ = ["TASK_NAME", "CeleryExecutor", "SiteExecutor", "celery_app", "job_changed",
           "queue_of"]

log = logging.getLogger("tinymlaas.executors.celery")

_POLL_S = 0.05
_POLL_MAX_S = 0.5


#: Woken when a result or progress of a job arrives in this process (the API's site
#: endpoints call :func:`job_changed`), so a waiting run goes on at once; polling the
#: table remains for what arrives in another server process.
_changed = threading.Condition()


def job_changed() -> None:
    """Wake the threads that wait for site jobs in this process."""
    with _changed:
        _changed.notify_all()


class SiteJob(JobHandle):
    def __init__(self, job: TransformJob | EvaluateJob, site_id: str, run_id: str) -> None:
        self.job_id = job.job_id
        self.job = job
        self.site_id = site_id
        self.run_id = run_id


class CeleryExecutor:
    """Publishes jobs on the sites' queues and follows them in the attempts table.

    A message holds only the job's id. The job itself, with signed URLs of what it reads,
    is recorded in the attempts table and handed to the worker that claims the attempt with
    its site's token (:mod:`tinymlaas.service.site_jobs`): whoever else reads a site's
    queue on the broker learns job ids, which open nothing.

    Args:
        broker_url: The broker's URL.
        attempts: The job attempts store (the server's database).
        lease_ttl_s: How long an attempt lives without a heartbeat.
        max_attempts: Attempts of a job before it fails.
        queue_timeout_s: How long a queued job waits for a worker to claim it before it
            fails.
    """

    def __init__(self, broker_url: str, attempts: AttemptStore, *, lease_ttl_s: float = 30.0,
                 max_attempts: int = 3, queue_timeout_s: float = 3600.0) -> None:
        self.broker_url = broker_url
        self.attempts = attempts
        self.lease_ttl_s = lease_ttl_s
        self.max_attempts = max_attempts
        self.queue_timeout_s = queue_timeout_s
        self._app: Any = None
        self._lock = threading.Lock()

    def for_site(self, site_id: str, run_id: str) -> SiteExecutor:
        return SiteExecutor(self, site_id, run_id)

    @property
    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                self._app = celery_app(self.broker_url, "tinymlaas-server")
            return self._app

    def close(self) -> None:
        with self._lock:
            app, self._app = self._app, None
        if app is not None:
            app.close()

    # jobs ---------------------------------------------------------------------------------

    def publish(self, job_id: str, site_id: str) -> None:
        """Put the job's id on the site's queue."""
        try:
            self.app.send_task(TASK_NAME, args=[job_id], queue=queue_of(site_id),
                               routing_key=queue_of(site_id), ignore_result=True,
                               retry=True, retry_policy={"max_retries": 3,
                                                         "interval_start": 0.5,
                                                         "interval_step": 1.0})
        except Exception as exc:  # kombu's connection errors vary with the transport
            raise ServiceUnavailableError(f"the broker could not take the step: "
                                          f"{type(exc).__name__}: {exc}") from exc

    def submit(self, job: TransformJob | EvaluateJob, site_id: str, run_id: str) -> SiteJob:
        attempt, send = self.attempts.queue(job.job_id, run_id, site_id, job.project,
                                            json.loads(job.model_dump_json()),
                                            self.max_attempts)
        if send:
            self.publish(job.job_id, site_id)
        else:
            log.info("job %s is %s at its site already: following it", job.job_id,
                     attempt.status)
        return SiteJob(job, site_id, run_id)

    def reap(self, handle: SiteJob) -> str | None:
        """Queue the job again (a new message) when its lease expired, while attempts are
        left; else it fails. A job queued longer than the queue timeout fails
        (``"unclaimed"``). Returns what was done."""
        if self.attempts.fail_unclaimed(handle.job_id, self.queue_timeout_s):
            log.warning("job %s failed: no worker of its site took it within %g s",
                        handle.job_id, self.queue_timeout_s)
            return "unclaimed"
        outcome = self.attempts.requeue_expired(handle.job_id)
        if outcome == "requeued":
            log.warning("job %s: its worker stopped renewing the lease; queued again",
                        handle.job_id)
            self.publish(handle.job_id, handle.site_id)
        elif outcome == "failed":
            log.warning("job %s failed: its workers stopped renewing the lease",
                        handle.job_id)
        return outcome

    def wait(self, handle: SiteJob, on_progress: ProgressCallback | None = None) -> JobResult:
        seen: tuple[float, str] | None = None
        poll = _POLL_S
        queued_since = time.monotonic()
        while True:
            row = self.attempts.get(handle.job_id)
            if row.finished:
                return _result(row)
            if row.status != "queued":
                queued_since = time.monotonic()
            elif time.monotonic() - queued_since >= self.queue_timeout_s:
                self.reap(handle)  # a write: only once it has waited that long here
            if row.status == "running":
                if on_progress is not None and (row.progress, row.message) != seen:
                    seen, poll = (row.progress, row.message), _POLL_S
                    on_progress(ProgressEvent(job_id=handle.job_id,
                                              fraction=min(max(row.progress, 0.0), 1.0),
                                              message=row.message))
                expires = row.lease_expires_at
                if expires is not None and expires < datetime.now(UTC):
                    self.reap(handle)  # a write: only once the lease looks expired
            with _changed:
                _changed.wait(poll)
            poll = min(poll * 1.5, _POLL_MAX_S)  # a long step is not read 10 times a second

    def status(self, handle: SiteJob) -> JobStatus:
        return "finished" if self.attempts.get(handle.job_id).finished else "running"

    def cancel(self, handle: SiteJob) -> None:
        """The worker sees it at its next heartbeat and stops the step."""
        self.attempts.cancel(handle.job_id)


def _result(row: Attempt) -> JobResult:
    if row.status == "cancelled":
        return JobResult(job_id=row.job_id, ok=False, error="cancelled",
                         error_type="Cancelled")
    if row.result is not None:
        return JobResult.model_validate({**row.result, "job_id": row.job_id})
    return JobResult(job_id=row.job_id, ok=False, error=row.error or "failed at the site",
                     error_type="SiteWorkerLost")


class SiteExecutor(Executor):
    """The :class:`Executor` of one run's jobs at one site."""

    def __init__(self, celery: CeleryExecutor, site_id: str, run_id: str) -> None:
        self.celery = celery
        self.site_id = site_id
        self.run_id = run_id

    def submit(self, job: TransformJob | EvaluateJob) -> SiteJob:
        return self.celery.submit(job, self.site_id, self.run_id)

    def status(self, handle: JobHandle) -> JobStatus:
        assert isinstance(handle, SiteJob)
        return self.celery.status(handle)

    def wait(self, handle: JobHandle, on_progress: ProgressCallback | None = None) -> JobResult:
        assert isinstance(handle, SiteJob)
        return self.celery.wait(handle, on_progress)

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, SiteJob)
        self.celery.cancel(handle)
