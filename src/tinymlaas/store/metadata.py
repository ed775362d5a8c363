"""The metadata store: domain entities in, domain entities out.

SQLite (WAL, busy timeout, immediate transactions so concurrent writers queue instead of
failing) by default; PostgreSQL by URL. The schema is created and upgraded by Alembic.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    bindparam,
    create_engine,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tinymlaas.domain import (
    Artifact,
    ArtifactKind,
    Dataset,
    Device,
    Evaluation,
    Model,
    Project,
    Run,
    RunStatus,
    StepRecord,
    StepStatus,
)
from tinymlaas.errors import ConflictError, NotFoundError, ServiceUnavailableError
from tinymlaas.store.paging import Key, Page, keyset, page_rows
from tinymlaas.store.tables import (
    ArtifactRow,
    DatasetRow,
    DeviceRow,
    EvaluationRow,
    ModelRow,
    ProjectRow,
    RunRow,
    StepCacheRow,
    StepRow,
)

__all__ = ["RUN_COLUMNS", "MetadataStore", "new_id"]

MIGRATIONS = Path(__file__).with_name("migrations")


def new_id(prefix: str) -> str:
    """A short random identifier such as ``run-3f9a2c1b7d``."""
    return f"{prefix}-{secrets.token_hex(5)}"


#: Seconds a pooled PostgreSQL connection may sit idle and still be used without a check.
PING_AFTER_IDLE_S = 5.0
#: Execution option of the read-only sessions' connections.
_READ_ONLY = "tinymlaas_read_only"


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Enough connections for a server's request threads and runs (a connection opened
        # past the pool is closed after use, and setting one up costs more than a read).
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=16, max_overflow=16)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (below) instead of the driver.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # Take the write lock up front: a deferred transaction that later writes can
            # fail with "database is locked" without waiting for the busy timeout. A
            # read-only session (``MetadataStore.reading``) opens no transaction at all:
            # each of its statements reads its own snapshot under WAL while a writer works
            # (as PostgreSQL's reads do, below), and skips a BEGIN and a COMMIT.
            if not connection.get_execution_options().get(_READ_ONLY, False):
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)

    # A pooled connection is checked before use only when it has been idle for a while (a
    # database restarted since would have closed it): SQLAlchemy's ``pool_pre_ping`` checks
    # every time, one more round trip for every session of a busy server.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping calls
        except Exception as exc:  # any failure: the pool connects again
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the pooled connection is closed")

    return engine


class MetadataStore:
    """Persistent records of projects, models, datasets, devices, artifacts, runs and caches.

    Args:
        url: A SQLAlchemy URL, e.g. ``sqlite:///path/db.sqlite`` or
            ``postgresql+psycopg://user@host/db``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.engine = _create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        read_options: dict[str, Any] = {_READ_ONLY: True}
        if not url.startswith("sqlite"):
            # In PostgreSQL's default isolation (read committed) each statement reads its
            # own snapshot, in a transaction or not: reads skip BEGIN and COMMIT, two
            # round trips to the server. (SQLite's reads open no transaction either: see
            # :func:`_create_engine`.)
            read_options["isolation_level"] = "AUTOCOMMIT"
        self._read_engine = self.engine.execution_options(**read_options)
        self._readers = sessionmaker(self._read_engine, expire_on_commit=False)
        self.migrate()

    @property
    def embedded(self) -> bool:
        """Whether the database runs in this process (SQLite): a read is CPU work here,
        with no wait on a database server."""
        return self.url.startswith("sqlite")

    def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ServiceUnavailableError(
                f"cannot reach the database at {self.engine.url.render_as_string()}: "
                f"{exc.orig}",
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it takes no write lock (see
        :func:`_create_engine`); writing in it may fail with "database is locked"."""
        with self._readers.begin() as session:
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """The same without the ORM's session, for the hot read paths that build entities
        from plain rows (:meth:`runs_of`)."""
        with self._read_engine.begin() as connection:
            yield connection

    # projects -----------------------------------------------------------------------------

    def ensure_project(self, project_id: str, name: str | None = None,
                       owner: str | None = None) -> Project:
        with self.session() as s:
            row = s.get(ProjectRow, project_id)
            if row is None:
                row = ProjectRow(id=project_id, name=name or project_id, owner=owner,
                                 created_at=_now())
                s.add(row)
            return _project(row)

    def list_projects(self) -> list[Project]:
        with self.reading() as s:
            return [_project(r) for r in s.scalars(select(ProjectRow).order_by(ProjectRow.name))]

    # artifacts ----------------------------------------------------------------------------

    def add_artifact(self, artifact: Artifact) -> Artifact:
        """Record an artifact; recording the same content again returns the first record."""
        try:
            with self.session() as s:
                row = s.get(ArtifactRow, artifact.sha256)
                if row is None:
                    row = ArtifactRow(**artifact.model_dump())
                    s.add(row)
                return _artifact(row)
        except IntegrityError:  # stored by another run at the same moment: same content
            return self.get_artifact(artifact.sha256)

    def get_artifact(self, sha256: str) -> Artifact:
        with self.reading() as s:
            row = s.get(ArtifactRow, sha256)
            if row is None:
                raise NotFoundError(f"artifact {sha256[:12]} not found")
            return _artifact(row)

    # models and datasets ------------------------------------------------------------------

    def add_model(self, model: Model) -> Model:
        self._insert(ModelRow(**_dump(model)), f"a model named {model.name!r} already exists "
                     f"in project {model.project!r}; pick another name")
        return model

    def add_dataset(self, dataset: Dataset) -> Dataset:
        self._insert(DatasetRow(**_dump(dataset)), f"a dataset named {dataset.name!r} already "
                     f"exists in project {dataset.project!r}; pick another name")
        return dataset

    def get_model(self, ref: str, project: str | None = None) -> Model:
        return Model.model_validate(self._by_ref(ModelRow, ref, project, "model"),
                                    from_attributes=True)

    def get_dataset(self, ref: str, project: str | None = None) -> Dataset:
        return Dataset.model_validate(self._by_ref(DatasetRow, ref, project, "dataset"),
                                      from_attributes=True)

    def list_models(self, project: str | None = None) -> list[Model]:
        return [Model.model_validate(r, from_attributes=True)
                for r in self._list(ModelRow, project)]

    def list_datasets(self, project: str | None = None) -> list[Dataset]:
        return [Dataset.model_validate(r, from_attributes=True)
                for r in self._list(DatasetRow, project)]

    def page_models(self, projects: Collection[str], limit: int,
                    after: Key | None = None) -> Page[Model]:
        """Models of ``projects``, oldest first, one page (:mod:`tinymlaas.store.paging`)."""
        return self._page(ModelRow, projects, limit, after,
                          lambda r: Model.model_validate(r, from_attributes=True))

    def page_datasets(self, projects: Collection[str], limit: int,
                      after: Key | None = None) -> Page[Dataset]:
        """Datasets of ``projects``, oldest first, one page."""
        return self._page(DatasetRow, projects, limit, after,
                          lambda r: Dataset.model_validate(r, from_attributes=True))

    # devices ------------------------------------------------------------------------------

    def add_device(self, device: Device) -> Device:
        """Record a custom device in its project (``device.project``)."""
        project = device.project or "default"
        device = device.model_copy(update={"project": project, "custom": True})
        self._insert(DeviceRow(project=project, name=device.name,
                               spec=device.model_dump(mode="json")),
                     f"a device named {device.name!r} already exists in project {project!r}")
        return device

    def list_custom_devices(self, projects: Collection[str] | None = None) -> list[Device]:
        """Custom devices, of the given projects only when ``projects`` is given."""
        with self.reading() as s:
            query = select(DeviceRow).order_by(DeviceRow.name, DeviceRow.project)
            if projects is not None:
                query = query.where(DeviceRow.project.in_(list(projects)))
            return [Device.model_validate({**r.spec, "project": r.project, "custom": True})
                    for r in s.scalars(query)]

    # runs ---------------------------------------------------------------------------------

    def add_run(self, run: Run) -> Run:
        with self.session() as s:
            s.add(RunRow(**_dump(run, exclude={"steps"})))
            s.flush()
            for step in run.steps:
                s.add(StepRow(run_id=run.id, **_dump(step)))
        return run

    def get_run(self, ref: str, project: str | None = None) -> Run:
        with self.reading() as s:
            row = self._by_ref_in(s, RunRow, ref, project, "run")
            return self.runs_of(s.connection(), [row])[0]

    def list_runs(self, project: str | None = None, status: str | None = None,
                  limit: int = 200) -> list[Run]:
        with self.reading() as s:
            query = select(*RUN_COLUMNS).order_by(RunRow.created_at.desc()).limit(limit)
            if project is not None:
                query = query.where(RunRow.project == project)
            if status is not None:
                query = query.where(RunRow.status == status)
            return self.runs_of(s.connection(), list(s.execute(query)))

    def page_runs(self, projects: Collection[str], limit: int, after: Key | None = None,
                  status: str | None = None) -> Page[Run]:
        """Runs of ``projects`` (with ``status`` when given), newest first, one page; the
        steps of the page's runs come in one query."""
        if not projects:
            return Page([])
        with self.reading() as s:
            query = select(*RUN_COLUMNS).where(RunRow.project.in_(list(projects)))
            if status is not None:
                query = query.where(RunRow.status == status)
            rows = list(s.execute(keyset(query, RunRow, limit, after, newest_first=True)))
            runs = {r.id: r for r in self.runs_of(s.connection(), rows[:limit], logs=False)}
            return page_rows(rows, limit, lambda r: runs[r.id])

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found")
            for name, value in fields.items():
                setattr(row, name, value.value if isinstance(value, RunStatus) else value)

    def update_step(self, run_id: str, index: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(StepRow, (run_id, index))
            if row is None:
                raise NotFoundError(f"step {index} of run {run_id!r} not found")
            for name, value in fields.items():
                setattr(row, name, value.value if isinstance(value, StepStatus) else value)

    def runs_with_status(self, *statuses: RunStatus) -> list[str]:
        with self.reading() as s:
            query = select(RunRow.id).where(RunRow.status.in_([st.value for st in statuses]))
            return list(s.scalars(query))

    # run leases ---------------------------------------------------------------------------
    # A run being executed carries a lease: its owner ("host:pid:process start") and an
    # expiry the owner keeps pushing forward. A ``running`` run whose lease has expired (or
    # that has none, from before leases) was left behind by a process that stopped. Every
    # change below is one conditional UPDATE, so two processes never both take a run.

    def acquire_lease(self, run_id: str, owner: str, ttl_s: float, *,
                      status_from: Collection[RunStatus] | None = None,
                      **fields: Any) -> bool:
        """Take the lease of ``run_id`` for ``owner`` (setting ``fields`` too) unless the
        run is ``running`` under an unexpired lease; with ``status_from``, only from those
        statuses. False, and nothing changed, when it was not taken."""
        now = _now()
        free = or_(RunRow.status != RunStatus.running.value, RunRow.lease_expires_at.is_(None),
                   RunRow.lease_expires_at < now)
        query = update(RunRow).where(RunRow.id == run_id, free)
        if status_from is not None:
            query = query.where(RunRow.status.in_([st.value for st in status_from]))
        values = {name: value.value if isinstance(value, RunStatus) else value
                  for name, value in fields.items()}
        query = query.values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_s),
                             **values)
        with self.session() as s:
            taken = s.execute(query, execution_options={"synchronize_session": False})
            return bool(cast(CursorResult[Any], taken).rowcount)

    def renew_leases(self, owner: str, run_ids: Collection[str], ttl_s: float) -> list[str]:
        """Push the expiry of ``owner``'s leases on ``run_ids`` to ``ttl_s`` from now; the
        ids whose lease ``owner`` still held (the others were taken over)."""
        if not run_ids:
            return []
        ids = list(run_ids)
        mine = (RunRow.id.in_(ids), RunRow.lease_owner == owner)
        with self.session() as s:
            s.execute(update(RunRow).where(*mine).values(
                lease_expires_at=_now() + timedelta(seconds=ttl_s)),
                execution_options={"synchronize_session": False})
            return list(s.scalars(select(RunRow.id).where(*mine)))

    def release_lease(self, run_id: str, owner: str, **fields: Any) -> bool:
        """Give up ``owner``'s lease of ``run_id``, recording ``fields`` (the run's outcome)
        in the same update; False, and nothing changed, when ``owner`` no longer holds it."""
        values = {name: value.value if isinstance(value, RunStatus) else value
                  for name, value in fields.items()}
        query = update(RunRow).where(RunRow.id == run_id, RunRow.lease_owner == owner).values(
            lease_owner=None, lease_expires_at=None, **values)
        with self.session() as s:
            released = s.execute(query, execution_options={"synchronize_session": False})
            return bool(cast(CursorResult[Any], released).rowcount)

    def expired_running_runs(self, now: datetime | None = None) -> list[str]:
        """Ids of ``running`` runs whose lease expired before ``now`` or that have none."""
        now = now or _now()
        with self.reading() as s:
            return list(s.scalars(select(RunRow.id).where(
                RunRow.status == RunStatus.running.value,
                or_(RunRow.lease_expires_at.is_(None), RunRow.lease_expires_at < now))
                .order_by(RunRow.created_at)))

    def run_lease(self, run_id: str) -> tuple[str | None, datetime | None]:
        """The lease of ``run_id``: ``(owner, expires_at)``, both None when it has none."""
        with self.reading() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found")
            return row.lease_owner, row.lease_expires_at

    # step cache and evaluations -----------------------------------------------------------

    def cached_step(self, key: str) -> tuple[str, dict[str, Any]] | None:
        with self.reading() as s:
            row = s.get(StepCacheRow, key)
            return (row.output_sha, dict(row.metrics)) if row else None

    def cache_step(self, key: str, output_sha: str, transformer: str,
                   metrics: dict[str, Any]) -> None:
        try:
            with self.session() as s:
                if s.get(StepCacheRow, key) is None:
                    s.add(StepCacheRow(key=key, output_sha=output_sha, transformer=transformer,
                                       metrics=metrics, created_at=_now()))
        except IntegrityError:
            pass  # another run cached the same step at the same moment: same content

    def get_evaluation(self, key: str) -> Evaluation | None:
        with self.reading() as s:
            row = s.get(EvaluationRow, key)
            return None if row is None else Evaluation(
                artifact_sha=row.artifact_sha, dataset_id=row.dataset_id,
                reference_sha=row.reference_sha, metrics=dict(row.metrics),
                created_at=row.created_at)

    def add_evaluation(self, key: str, evaluation: Evaluation) -> None:
        try:
            with self.session() as s:
                if s.get(EvaluationRow, key) is None:
                    s.add(EvaluationRow(key=key, **_dump(evaluation)))
        except IntegrityError:
            pass

    # helpers ------------------------------------------------------------------------------

    def _insert(self, row: Any, conflict_message: str) -> None:
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise ConflictError(conflict_message) from exc

    def _list(self, table: Any, project: str | None) -> list[Any]:
        with self.reading() as s:
            query = select(table).order_by(table.created_at)
            if project is not None:
                query = query.where(table.project == project)
            return list(s.scalars(query))

    def _page(self, table: Any, projects: Collection[str], limit: int, after: Key | None,
              convert: Any) -> Page[Any]:
        if not projects:
            return Page([])
        with self.reading() as s:
            query = select(table).where(table.project.in_(list(projects)))
            return page_rows(s.scalars(keyset(query, table, limit, after)), limit, convert)

    def _by_ref(self, table: Any, ref: str, project: str | None, what: str) -> Any:
        with self.reading() as s:
            return self._by_ref_in(s, table, ref, project, what)

    @staticmethod
    def _by_ref_in(s: Session, table: Any, ref: str, project: str | None, what: str) -> Any:
        """Find by id, else by name (newest first), within a project when one is given."""
        row = s.get(table, ref)
        if row is not None and (project is None or row.project == project):
            return row
        query = select(table).where(table.name == ref).order_by(table.created_at.desc())
        if project is not None:
            query = query.where(table.project == project)
        row = s.scalars(query).first()
        if row is None:
            raise NotFoundError(f"{what} {ref!r} not found; `tinymlaas {what}s list` shows "
                                f"the known ones", {"kind": what, "ref": ref})
        return row

    @staticmethod
    def runs_of(c: Connection, rows: Sequence[Any], *, logs: bool = True) -> list[Run]:
        """The runs of ``rows`` (rows of :data:`RUN_COLUMNS`, or ``RunRow`` objects), with
        their steps read in one query, without the steps' logs unless ``logs``.

        Plain rows rather than ORM objects: building these is most of the cost of the
        API's most frequent requests.
        """
        steps: dict[str, list[StepRecord]] = {r.id: [] for r in rows}
        if steps:
            query = _STEPS_OF[logs]
            for step in c.execute(query, {"ids": list(steps)}):
                data = dict(step._mapping)
                steps[data.pop("run_id")].append(StepRecord.model_validate(data))
        return [Run.model_validate({**{c.name: getattr(r, c.name) for c in RUN_COLUMNS},
                                    "steps": steps[r.id]}) for r in rows]


#: A run's columns as its entity has them: who executes a run (its lease) is the store's
#: business, not part of the run.
RUN_COLUMNS = tuple(c for c in RunRow.__table__.columns
                    if c.name not in {"lease_owner", "lease_expires_at"})
#: The steps of the runs with ids ``ids``, with their logs or without. Built once:
#: building and keying a statement costs more than running this one.
_STEPS_OF = {logs: select(*(c for c in StepRow.__table__.columns if logs or c.name != "log"))
             .where(StepRow.run_id.in_(bindparam("ids", expanding=True)))
             .order_by(StepRow.run_id, StepRow.index) for logs in (True, False)}


def _now() -> datetime:
    return datetime.now(UTC)


def _dump(entity: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    """Entity fields as column values: nested models as JSON, enums as strings."""
    data = entity.model_dump(mode="json", exclude=exclude)
    for name, value in entity:
        if isinstance(value, datetime):
            data[name] = value
    return data


def _project(row: ProjectRow) -> Project:
    return Project(id=row.id, name=row.name, owner=row.owner, created_at=row.created_at)


def _artifact(row: ArtifactRow) -> Artifact:
    return Artifact(sha256=row.sha256, kind=ArtifactKind(row.kind), size_bytes=row.size_bytes,
                    filename=row.filename, parents=list(row.parents), step_key=row.step_key,
                    created_at=row.created_at)
