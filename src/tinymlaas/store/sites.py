"""Sites and their workers in the metadata store (revision ``0009``).

A site's token is kept as its sha256 only. A worker's heartbeat is an upsert of its row:
the worker's own id within its site, its host name, the time and the steps it runs.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tinymlaas.domain.sites import WORKER_TIMEOUT_S, Site, SiteWorker
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store.metadata import MetadataStore
from tinymlaas.store.paging import Key, Page, keyset, page_rows
from tinymlaas.store.tables import Base

__all__ = ["SiteStore"]

#: Workers a site may list at once (gone ones make room for new ones): a site's token
#: cannot grow the list without bound.
MAX_WORKERS = 200


class SiteRow(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class SiteWorkerRow(Base):
    __tablename__ = "site_workers"
    site_id: Mapped[str] = mapped_column(String(40), ForeignKey("sites.id", ondelete="CASCADE"),
                                         primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    last_heartbeat: Mapped[datetime] = mapped_column(index=True)
    running_steps: Mapped[list[Any]] = mapped_column(JSON)


def _count_workers(s: Any, site_id: str) -> int:
    return s.scalar(select(func.count()).select_from(SiteWorkerRow)
                    .where(SiteWorkerRow.site_id == site_id))


def _worker(row: SiteWorkerRow) -> SiteWorker:
    return SiteWorker(id=row.worker_id, hostname=row.hostname,
                      last_heartbeat=row.last_heartbeat, running_steps=list(row.running_steps))


def _not_found(ref: str) -> NotFoundError:
    return NotFoundError(f"site {ref!r} not found", {"kind": "site", "ref": ref})


class SiteStore:
    """Site records on a :class:`MetadataStore`'s database."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def _site(self, s: Any, row: SiteRow) -> Site:
        workers = s.scalars(select(SiteWorkerRow).where(SiteWorkerRow.site_id == row.id)
                            .order_by(SiteWorkerRow.last_heartbeat.desc())
                            .limit(MAX_WORKERS)).all()
        return Site(id=row.id, project=row.project, name=row.name, created_at=row.created_at,
                    workers=[_worker(w) for w in workers])

    def add_site(self, site: Site, token_hash: str) -> Site:
        try:
            with self.meta.session() as s:
                s.add(SiteRow(id=site.id, project=site.project, name=site.name,
                              token_hash=token_hash, created_at=site.created_at))
        except IntegrityError:
            raise ConflictError(f"the project already has a site named {site.name!r}",
                                {"kind": "site", "name": site.name}) from None
        return site

    def get_site(self, ref: str, projects: Collection[str] | None = None) -> Site:
        """By id, or by name within ``projects`` (every project when None)."""
        with self.meta.reading() as s:
            query = select(SiteRow).where((SiteRow.id == ref) | (SiteRow.name == ref))
            if projects is not None:
                query = query.where(SiteRow.project.in_(list(projects)))
            rows = s.scalars(query.order_by(SiteRow.created_at)).all()
            if not rows:
                raise _not_found(ref)
            exact = [r for r in rows if r.id == ref]
            if not exact and len({r.project for r in rows}) > 1:
                raise ConflictError(f"site name {ref!r} is used in several of your projects; "
                                    "give its id or the project", {"kind": "site", "ref": ref})
            return self._site(s, (exact or rows)[0])

    def page_sites(self, projects: Collection[str], limit: int,
                   after: Key | None = None) -> Page[Site]:
        """Oldest first."""
        if not projects:
            return Page([])
        with self.meta.reading() as s:
            query = select(SiteRow).where(SiteRow.project.in_(list(projects)))
            return page_rows(s.scalars(keyset(query, SiteRow, limit, after)).all(), limit,
                             lambda row: self._site(s, row))

    def list_sites(self, projects: Collection[str]) -> builtins.list[Site]:
        if not projects:
            return []
        with self.meta.reading() as s:
            rows = s.scalars(select(SiteRow).where(SiteRow.project.in_(list(projects)))
                             .order_by(SiteRow.created_at, SiteRow.id)).all()
            return [self._site(s, row) for row in rows]

    def delete_site(self, site_id: str) -> None:
        with self.meta.session() as s:
            s.execute(delete(SiteWorkerRow).where(SiteWorkerRow.site_id == site_id))
            s.execute(delete(SiteRow).where(SiteRow.id == site_id))

    def site_by_token(self, token_hash: str) -> Site | None:
        with self.meta.reading() as s:
            row = s.scalars(select(SiteRow).where(SiteRow.token_hash == token_hash)).first()
            return None if row is None else self._site(s, row)

    @staticmethod
    def _make_room(s: Any, site_id: str, now: datetime) -> None:
        if _count_workers(s, site_id) < MAX_WORKERS:
            return
        gone = now - timedelta(seconds=WORKER_TIMEOUT_S)
        s.execute(delete(SiteWorkerRow).where(SiteWorkerRow.site_id == site_id,
                                              SiteWorkerRow.last_heartbeat < gone))
        if _count_workers(s, site_id) >= MAX_WORKERS:
            raise ConflictError(f"the site lists {MAX_WORKERS} live workers, as many as it "
                                "may; a new one is taken once one has stopped for "
                                f"{WORKER_TIMEOUT_S:.0f} s", {"max_workers": MAX_WORKERS})

    def heartbeat(self, site_id: str, worker_id: str, hostname: str,
                  running_steps: builtins.list[str]) -> SiteWorker:
        """Insert or update the worker's row with the time of now. A new worker of a site
        listing :data:`MAX_WORKERS` first takes the place of the gone ones (silent past
        :data:`WORKER_TIMEOUT_S`); when none has gone, it is refused.

        Raises:
            ConflictError: the site lists as many live workers as it may.
        """
        now = datetime.now(UTC)
        for attempt in range(2):  # two first heartbeats at once: one inserts, one updates
            try:
                with self.meta.session() as s:
                    row = s.get(SiteWorkerRow, (site_id, worker_id))
                    if row is None:
                        self._make_room(s, site_id, now)
                        s.add(SiteWorkerRow(site_id=site_id, worker_id=worker_id,
                                            hostname=hostname, last_heartbeat=now,
                                            running_steps=running_steps))
                    else:
                        row.hostname, row.last_heartbeat = hostname, now
                        row.running_steps = running_steps
                break
            except IntegrityError:
                if attempt:
                    raise
        return SiteWorker(id=worker_id, hostname=hostname, last_heartbeat=now,
                          running_steps=running_steps)
