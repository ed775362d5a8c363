"""Searches (``optimize``) in the metadata store: the request, the state, the candidates as
they finish and the outcome, in one row per search (revision ``0006``).

A search is executed by one process at a time: the one that moved it from ``queued`` to
``running`` (one conditional update, so two processes never both take it). Cancelling
marks the row; the executing process sees the mark and stops.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CursorResult,
    Float,
    Integer,
    String,
    Text,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from tinymlaas.domain.searches import Candidate, Search, SearchState
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store.metadata import MetadataStore
from tinymlaas.store.paging import Key, Page, keyset, page_rows
from tinymlaas.store.tables import Base

__all__ = ["SearchRow", "SearchStore"]


def _now() -> datetime:
    return datetime.now(UTC)


class SearchRow(Base):
    __tablename__ = "searches"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    created_by: Mapped[str | None] = mapped_column(String(40))
    model_id: Mapped[str] = mapped_column(String(40))
    model_name: Mapped[str] = mapped_column(String(100))
    dataset_id: Mapped[str] = mapped_column(String(40))
    dataset_name: Mapped[str] = mapped_column(String(100))
    device: Mapped[str | None] = mapped_column(String(100))
    objective: Mapped[str] = mapped_column(String(20))
    max_accuracy_drop: Mapped[float] = mapped_column(Float)
    quality_budget: Mapped[str | None] = mapped_column(String(40))
    time_budget_s: Mapped[float] = mapped_column(Float)
    max_trials: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    baseline: Mapped[dict[str, Any]] = mapped_column(JSON)
    candidates: Mapped[list[Any]] = mapped_column(JSON)
    pareto: Mapped[list[Any]] = mapped_column(JSON)
    recommended: Mapped[str | None] = mapped_column(String(40))
    closest: Mapped[str | None] = mapped_column(String(40))
    sensitivity: Mapped[list[Any]] = mapped_column(JSON)
    # Who executes it ("host:pid:process start"), set when it starts.
    runner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    elapsed_s: Mapped[float | None] = mapped_column(Float)


_FIELDS = tuple(name for name in Search.model_fields)


def _search(row: SearchRow) -> Search:
    return Search.model_validate({name: getattr(row, name) for name in _FIELDS})


class SearchStore:
    """Search records on a :class:`MetadataStore`'s database."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def add(self, search: Search) -> Search:
        with self.meta.session() as s:
            s.add(SearchRow(**search.model_dump(mode="json", exclude={"created_at", "started_at",
                                                                      "finished_at"}),
                            created_at=search.created_at, started_at=search.started_at,
                            finished_at=search.finished_at))
        return search

    def get(self, search_id: str, projects: Collection[str] | None = None) -> Search:
        """The search, if it is in ``projects`` (any project when not given)."""
        with self.meta.session() as s:
            row = s.get(SearchRow, search_id)
            if row is None or (projects is not None and row.project not in projects):
                raise NotFoundError(f"search {search_id!r} not found; `tinymlaas searches "
                                    "list` shows the known ones",
                                    {"kind": "search", "ref": search_id})
            return _search(row)

    def list(self, projects: Collection[str] | None = None, limit: int = 200) -> list[Search]:
        """Newest first, of ``projects`` only when given."""
        if projects is not None and not projects:
            return []
        with self.meta.session() as s:
            query = select(SearchRow).order_by(SearchRow.created_at.desc()).limit(limit)
            if projects is not None:
                query = query.where(SearchRow.project.in_(list(projects)))
            return [_search(r) for r in s.scalars(query)]

    def page(self, projects: Collection[str], limit: int,
             after: Key | None = None) -> Page[Search]:
        """Searches of ``projects``, newest first, one page (:mod:`tinymlaas.store.paging`)."""
        if not projects:
            return Page([])
        with self.meta.reading() as s:
            query = select(SearchRow).where(SearchRow.project.in_(list(projects)))
            return page_rows(s.scalars(keyset(query, SearchRow, limit, after,
                                              newest_first=True)), limit, _search)

    def claim(self, search_id: str, runner: str) -> bool:
        """Move a queued search to running for ``runner``; False when it was not queued."""
        query = (update(SearchRow)
                 .where(SearchRow.id == search_id, SearchRow.state == SearchState.queued.value)
                 .values(state=SearchState.running.value, runner=runner, started_at=_now()))
        with self.meta.session() as s:
            taken = s.execute(query, execution_options={"synchronize_session": False})
            return bool(cast(CursorResult[Any], taken).rowcount)

    def add_candidate(self, search_id: str, candidate: Candidate,
                      baseline: dict[str, Any]) -> None:
        """Append a finished candidate (the runner is the only writer while it runs)."""
        with self.meta.session() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"search {search_id!r} not found")
            row.candidates = [*row.candidates, candidate.model_dump(mode="json")]
            if baseline and not row.baseline:
                row.baseline = baseline

    def finish(self, search_id: str, state: SearchState, **fields: Any) -> Search:
        """Record the outcome (``fields`` are :class:`Search` fields)."""
        values = {name: [v.model_dump(mode="json") if hasattr(v, "model_dump") else v
                         for v in value] if isinstance(value, list) else value
                  for name, value in fields.items()}
        with self.meta.session() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"search {search_id!r} not found")
            for name, value in values.items():
                setattr(row, name, value)
            row.state = state.value
            row.finished_at = _now()
            return _search(row)

    def request_cancel(self, search_id: str) -> Search:
        """Cancel a queued search at once; mark a running one for its runner to stop.

        Raises:
            ConflictError: the search has ended.
        """
        with self.meta.session() as s:
            row = s.get(SearchRow, search_id)
            if row is None:
                raise NotFoundError(f"search {search_id!r} not found", {"kind": "search"})
            if row.state == SearchState.queued.value:
                row.state = SearchState.cancelled.value
                row.cancel_requested = True
                row.finished_at = _now()
                row.message = "cancelled before it started"
            elif row.state == SearchState.running.value:
                row.cancel_requested = True
            else:
                raise ConflictError(f"search {search_id} is {row.state}; only a queued or "
                                    "running search can be cancelled",
                                    {"search": search_id, "state": row.state})
            return _search(row)

    def is_cancel_requested(self, search_id: str) -> bool:
        with self.meta.session() as s:
            row = s.get(SearchRow, search_id)
            return row is None or bool(row.cancel_requested)

    def with_state(self, state: SearchState) -> builtins.list[tuple[str, str | None]]:
        """``(id, runner)`` of the searches in ``state``, oldest first."""
        with self.meta.session() as s:
            query = (select(SearchRow.id, SearchRow.runner)
                     .where(SearchRow.state == state.value).order_by(SearchRow.created_at))
            return [(found.id, found.runner) for found in s.execute(query)]
