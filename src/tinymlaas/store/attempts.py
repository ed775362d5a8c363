"""Job attempts: the leases of steps that run on a site's workers (revisions ``0010``,
``0012``).

One row per job (a step, or an evaluation, of a run): the job's message, its status
(``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``), which worker runs
which attempt, the lease that worker's heartbeat renews, its progress, the one output its
attempt may upload, and its result.

Every change is one conditional ``UPDATE``, so two workers (a message the broker
redelivered, and the one the reaper queued again) never both hold a job: a worker claims
a job that is queued, or one whose lease expired; a heartbeat or a result counts only
from the worker holding the current attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tinymlaas.store.metadata import MetadataStore
from tinymlaas.store.sites import SiteRow
from tinymlaas.store.tables import Base

__all__ = ["Attempt", "AttemptStore"]

FINISHED = ("succeeded", "failed", "cancelled")


class AttemptRow(Base):
    __tablename__ = "job_attempts"
    job_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    site_id: Mapped[str] = mapped_column(String(40))
    project: Mapped[str] = mapped_column(String(40))
    job: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


@dataclass(frozen=True)
class Attempt:
    """A job's row as the executor and the site endpoints see it."""

    job_id: str
    run_id: str
    site_id: str
    project: str
    job: dict[str, Any]
    status: str
    attempt: int
    max_attempts: int
    worker_id: str | None
    lease_expires_at: datetime | None
    progress: float
    message: str
    result: dict[str, Any] | None
    error: str | None
    output_sha256: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def _held(job_id: str, site_id: str, worker_id: str, attempt: int) -> tuple[Any, ...]:
    """The conditions under which ``attempt`` of the job is still ``worker_id``'s."""
    return (AttemptRow.job_id == job_id, AttemptRow.site_id == site_id,
            AttemptRow.worker_id == worker_id, AttemptRow.attempt == attempt,
            AttemptRow.status.in_(("running", "queued")))


def _attempt(row: AttemptRow) -> Attempt:
    return Attempt(job_id=row.job_id, run_id=row.run_id, site_id=row.site_id,
                   project=row.project, job=dict(row.job), status=row.status,
                   attempt=row.attempt, max_attempts=row.max_attempts, worker_id=row.worker_id,
                   lease_expires_at=row.lease_expires_at, progress=row.progress,
                   message=row.message, result=row.result, error=row.error,
                   output_sha256=row.output_sha256)


def _now() -> datetime:
    return datetime.now(UTC)


class AttemptStore:
    """Job attempts on a :class:`MetadataStore`'s database."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def queue(self, job_id: str, run_id: str, site_id: str, project: str,
              job: dict[str, Any], max_attempts: int) -> tuple[Attempt, bool]:
        """Record a job as queued; a job already recorded (the same step key: a resumed
        run) is kept as it is, unless it failed or was cancelled, when it is queued afresh.
        Returns the row and whether a message must be sent for it."""
        now = _now()
        try:
            with self.meta.session() as s:
                s.add(AttemptRow(job_id=job_id, run_id=run_id, site_id=site_id,
                                 project=project, job=job, status="queued", attempt=0,
                                 max_attempts=max_attempts, worker_id=None,
                                 lease_expires_at=None, progress=0.0, message="queued",
                                 result=None, error=None, output_sha256=None,
                                 created_at=now, updated_at=now))
            return self.get(job_id), True
        except IntegrityError:
            pass
        with self.meta.session() as s:
            changed = s.execute(
                update(AttemptRow).where(AttemptRow.job_id == job_id,
                                         AttemptRow.status.in_(("failed", "cancelled")))
                .values(status="queued", attempt=0, worker_id=None, lease_expires_at=None,
                        progress=0.0, message="queued", result=None, error=None, job=job,
                        output_sha256=None, max_attempts=max_attempts, updated_at=now)).rowcount  # type: ignore[attr-defined]
        return self.get(job_id), bool(changed)

    def get(self, job_id: str) -> Attempt:
        with self.meta.reading() as s:
            row = s.get(AttemptRow, job_id)
            if row is None:
                raise KeyError(job_id)
            return _attempt(row)

    def find(self, job_id: str, site_id: str) -> Attempt | None:
        """The job, if it is one of ``site_id``'s."""
        with self.meta.reading() as s:
            row = s.get(AttemptRow, job_id)
            return None if row is None or row.site_id != site_id else _attempt(row)

    def queued_of_site(self, site_id: str, suffix: str, limit: int = 8) -> list[str]:
        """The ids of ``site_id``'s queued jobs whose id ends in ``suffix``, oldest first."""
        with self.meta.reading() as s:
            return list(s.scalars(
                select(AttemptRow.job_id).where(AttemptRow.site_id == site_id,
                                                AttemptRow.status == "queued",
                                                AttemptRow.job_id.endswith(suffix))
                .order_by(AttemptRow.created_at).limit(limit)).all())

    def running_of_site(self, site_id: str) -> list[Attempt]:
        with self.meta.reading() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.site_id == site_id,
                                                      AttemptRow.status == "running")
                             .limit(256)).all()
            return [_attempt(r) for r in rows]

    def claim(self, job_id: str, site_id: str, worker_id: str, ttl_s: float) -> Attempt | None:
        """Give the job's next attempt to ``worker_id``: when it is queued, or its holder's
        lease expired, and attempts are left. None when another worker holds it alive, it
        has ended, or no attempt is left (the reaper then fails it)."""
        now = _now()
        with self.meta.session() as s:
            claimable = (AttemptRow.status == "queued") | (
                (AttemptRow.status == "running") & (AttemptRow.lease_expires_at < now))
            changed = s.execute(
                update(AttemptRow).where(AttemptRow.job_id == job_id,
                                         AttemptRow.site_id == site_id, claimable,
                                         AttemptRow.attempt < AttemptRow.max_attempts)
                .values(status="running", attempt=AttemptRow.attempt + 1, worker_id=worker_id,
                        lease_expires_at=now + timedelta(seconds=ttl_s), message="started",
                        output_sha256=None, updated_at=now)).rowcount  # type: ignore[attr-defined]
        return self.get(job_id) if changed else None

    def renew(self, job_id: str, site_id: str, worker_id: str, attempt: int, ttl_s: float,
              progress: float | None = None, message: str | None = None) -> bool:
        """The heartbeat of the attempt's holder: its lease renewed, its progress kept.
        An attempt queued again after its lease expired, but not yet claimed by another
        worker, is still this worker's: it runs again (and the new message is dropped).
        False when the attempt is no longer this worker's (taken over by a newer attempt,
        cancelled, or ended): the worker stops it."""
        now = _now()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=ttl_s),
                                  "updated_at": now, "status": "running"}
        if progress is not None:
            values["progress"] = progress
        if message is not None:
            values["message"] = message
        with self.meta.session() as s:
            return bool(s.execute(
                update(AttemptRow).where(*_held(job_id, site_id, worker_id, attempt))
                .values(**values)).rowcount)  # type: ignore[attr-defined]

    def bind_output(self, job_id: str, site_id: str, worker_id: str, attempt: int,
                    sha256: str) -> bool:
        """Let the holder's attempt upload ``sha256``: the attempt's one output, so asking
        again for the same one is fine and another one is refused. False when the attempt
        is not this worker's (as for :meth:`finish`), or it named another output."""
        with self.meta.session() as s:
            return bool(s.execute(
                update(AttemptRow).where(*_held(job_id, site_id, worker_id, attempt),
                                         AttemptRow.output_sha256.is_(None)
                                         | (AttemptRow.output_sha256 == sha256))
                .values(output_sha256=sha256, updated_at=_now())).rowcount)  # type: ignore[attr-defined]

    def finish(self, job_id: str, site_id: str, worker_id: str, attempt: int,
               result: dict[str, Any]) -> bool:
        """Record the holder's result, also after its lease expired while no newer
        attempt has begun (a worker that could not reach the server finished the step);
        False when the attempt is no longer its own."""
        now = _now()
        with self.meta.session() as s:
            return bool(s.execute(
                update(AttemptRow).where(*_held(job_id, site_id, worker_id, attempt))
                .values(status="succeeded" if result.get("ok") else "failed", result=result,
                        progress=1.0, lease_expires_at=None, message="done",
                        error=result.get("error"), updated_at=now)).rowcount)  # type: ignore[attr-defined]

    def requeue_expired(self, job_id: str) -> str | None:
        """The reaper's step for one job: a ``running`` attempt whose lease expired is
        queued again while attempts are left (``"requeued"``), else failed (``"failed"``).
        None when the lease is alive or the job is not running."""
        now = _now()
        with self.meta.session() as s:
            expired = ((AttemptRow.job_id == job_id) & (AttemptRow.status == "running")
                       & (AttemptRow.lease_expires_at < now))
            if s.execute(update(AttemptRow).where(expired,
                                                  AttemptRow.attempt < AttemptRow.max_attempts)
                         .values(status="queued", message="requeued: the worker stopped "
                                 "renewing its lease", lease_expires_at=None,
                                 updated_at=now)).rowcount:  # type: ignore[attr-defined]
                return "requeued"
            row = s.get(AttemptRow, job_id)
            if row is None:
                return None
            error = (f"the site's workers stopped renewing the lease of this step "
                     f"{row.attempt} times (last worker: {row.worker_id}); check that the "
                     "site's workers stay up, then rerun")
            if s.execute(update(AttemptRow).where(expired)
                         .values(status="failed", error=error, lease_expires_at=None,
                                 updated_at=now)).rowcount:  # type: ignore[attr-defined]
                return "failed"
        return None

    def fail_unclaimed(self, job_id: str, timeout_s: float) -> bool:
        """The reaper's step for a job no worker takes: one queued (first, or again after a
        lease expired) and not claimed for ``timeout_s`` fails, saying that no live worker
        of its site took it. False while it waits less, or it is not queued."""
        now = _now()
        with self.meta.session() as s:
            row = s.get(AttemptRow, job_id)
            if row is None:
                return False
            site = s.get(SiteRow, row.site_id)
            name = site.name if site is not None else row.site_id
            error = (f"no live worker of site {name!r} took this step within "
                     f"{timeout_s:g} s (TINYMLAAS_SITE_QUEUE_TIMEOUT_S); start one with "
                     f"`tinymlaas worker --server URL --site {name} --token TOKEN "
                     "--data-root DIR`, then rerun")
            return bool(s.execute(
                update(AttemptRow).where(AttemptRow.job_id == job_id,
                                         AttemptRow.status == "queued",
                                         AttemptRow.updated_at
                                         < now - timedelta(seconds=timeout_s))
                .values(status="failed", error=error, message="no worker took it",
                        lease_expires_at=None, updated_at=now)).rowcount)  # type: ignore[attr-defined]

    def cancel(self, job_id: str) -> None:
        with self.meta.session() as s:
            s.execute(update(AttemptRow).where(AttemptRow.job_id == job_id,
                                               AttemptRow.status.in_(("queued", "running")))
                      .values(status="cancelled", error="cancelled", lease_expires_at=None,
                              updated_at=_now()))
