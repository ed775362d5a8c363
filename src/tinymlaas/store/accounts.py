"""Accounts and studio records: users, API tokens, project members, registered external
transformers, pipeline templates and webhooks.

The ORM classes share ``Base`` with :mod:`tinymlaas.store.tables` so one Alembic history
covers every table (revision ``0002``). :class:`AccountStore` works on a
:class:`~tinymlaas.store.metadata.MetadataStore`'s sessions and, like it, hands out
entities, never ORM rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    or_,
    select,
    union,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tinymlaas.domain import Project, Run
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store.metadata import RUN_COLUMNS, MetadataStore
from tinymlaas.store.paging import Key, Page, keyset, page_rows
from tinymlaas.store.tables import (
    Base,
    DatasetRow,
    ModelRow,
    ProjectRow,
    RunRow,
    StepRow,
)

__all__ = [
    "AccountStore",
    "ApiToken",
    "ExternalTransformer",
    "Membership",
    "PipelineTemplate",
    "User",
    "Webhook",
]

Role = Literal["owner", "editor", "viewer"]


def _now() -> datetime:
    return datetime.now(UTC)


# entities ---------------------------------------------------------------------------------


class _Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")


class User(_Entity):
    id: str
    email: str
    name: str = ""
    default_project: str
    is_admin: bool = False
    created_at: datetime = Field(default_factory=_now)


class ApiToken(_Entity):
    """A bearer token; only its sha256 is stored."""

    id: str
    user_id: str
    name: str
    kind: Literal["api", "session"] = "api"
    created_at: datetime = Field(default_factory=_now)
    expires_at: datetime | None = None


class Membership(_Entity):
    project_id: str
    user_id: str
    email: str
    role: Role
    created_at: datetime = Field(default_factory=_now)


class ExternalTransformer(_Entity):
    """A named, stored configuration of the ``external`` transformer."""

    id: str
    project: str
    name: str
    summary: str = ""
    params: dict[str, Any]
    created_at: datetime = Field(default_factory=_now)


class PipelineTemplate(_Entity):
    id: str
    project: str
    name: str
    description: str = ""
    pipeline: dict[str, Any]
    created_at: datetime = Field(default_factory=_now)


class Webhook(_Entity):
    id: str
    project: str
    url: str
    secret: str
    events: list[str] = Field(default_factory=lambda: ["run.succeeded", "run.degraded",
                                                       "run.failed"])
    created_at: datetime = Field(default_factory=_now)


# tables -----------------------------------------------------------------------------------


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    default_project: Mapped[str] = mapped_column(String(40))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class TokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class MemberRow(Base):
    __tablename__ = "project_members"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]


class ExternalTransformerRow(Base):
    __tablename__ = "external_transformers"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class PipelineTemplateRow(Base):
    __tablename__ = "pipeline_templates"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WebhookRow(Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(255))
    events: Mapped[list[Any]]
    created_at: Mapped[datetime]


_REF_TABLES: dict[str, Any] = {"model": ModelRow, "dataset": DatasetRow, "run": RunRow}


# store ------------------------------------------------------------------------------------


class AccountStore:
    """Account and studio records on the metadata store's database.

    Args:
        meta: The metadata store whose engine, sessions and migrations are shared.
    """

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    # users --------------------------------------------------------------------------------

    def add_user(self, user: User, password_hash: str, project_name: str) -> User:
        """Create a user and their personal project in one transaction; the first account
        becomes the admin."""
        try:
            with self.meta.session() as s:
                if s.scalars(select(UserRow.id).limit(1)).first() is None:
                    user = user.model_copy(update={"is_admin": True})
                s.add(ProjectRow(id=user.default_project, name=project_name, owner=user.id,
                                 created_at=user.created_at))
                s.add(UserRow(password_hash=password_hash, **user.model_dump()))
        except IntegrityError as exc:
            raise ConflictError(f"an account for {user.email!r} already exists; log in "
                                "instead") from exc
        return user

    def get_user(self, user_id: str) -> User:
        with self.meta.reading() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFoundError(f"user {user_id!r} not found")
            return _user(row)

    def find_user(self, email: str) -> tuple[User, str] | None:
        """The user with ``email`` and their password hash, or None."""
        with self.meta.reading() as s:
            row = s.scalars(select(UserRow).where(UserRow.email == email)).first()
            return None if row is None else (_user(row), row.password_hash)

    def set_admin(self, email: str, admin: bool) -> User | None:
        """Grant or take the admin role; None when no account has ``email``."""
        with self.meta.session() as s:
            row = s.scalars(select(UserRow).where(UserRow.email == email)).first()
            if row is None:
                return None
            row.is_admin = admin
            return _user(row)

    def list_users(self) -> list[User]:
        with self.meta.reading() as s:
            return [_user(row) for row in s.scalars(select(UserRow).order_by(UserRow.created_at))]

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        with self.meta.session() as s:
            row = s.get(UserRow, user_id)
            if row is not None:
                row.password_hash = password_hash

    # tokens -------------------------------------------------------------------------------

    def add_token(self, token: ApiToken, token_hash: str) -> ApiToken:
        with self.meta.session() as s:
            s.add(TokenRow(token_hash=token_hash, **token.model_dump()))
        return token

    def find_token(self, token_hash: str) -> tuple[ApiToken, User] | None:
        """The token with this hash and its user, in one query (every request asks)."""
        with self.meta.reading() as s:
            found = s.execute(select(TokenRow, UserRow)
                              .join(UserRow, UserRow.id == TokenRow.user_id)
                              .where(TokenRow.token_hash == token_hash)).first()
            return None if found is None else (_token(found[0]), _user(found[1]))

    def page_tokens(self, user_id: str, limit: int, after: Key | None = None,
                    kind: str = "api") -> Page[ApiToken]:
        with self.meta.reading() as s:
            query = select(TokenRow).where(TokenRow.user_id == user_id, TokenRow.kind == kind)
            return page_rows(s.scalars(keyset(query, TokenRow, limit, after)), limit, _token)

    def list_tokens(self, user_id: str, kind: str = "api") -> list[ApiToken]:
        with self.meta.reading() as s:
            rows = s.scalars(select(TokenRow).where(TokenRow.user_id == user_id,
                                                    TokenRow.kind == kind)
                             .order_by(TokenRow.created_at))
            return [_token(r) for r in rows]

    def delete_token(self, user_id: str, token_id: str) -> bool:
        with self.meta.session() as s:
            result = s.execute(delete(TokenRow).where(TokenRow.id == token_id,
                                                      TokenRow.user_id == user_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # projects and members -----------------------------------------------------------------

    def add_project(self, project: Project) -> Project:
        with self.meta.session() as s:
            s.add(ProjectRow(**project.model_dump()))
        return project

    def get_project(self, project_id: str) -> Project | None:
        with self.meta.reading() as s:
            row = s.get(ProjectRow, project_id)
            return None if row is None else _project(row)

    def is_default_project(self, project_id: str) -> bool:
        """Whether the project is some account's personal one."""
        with self.meta.reading() as s:
            return s.scalars(select(UserRow.id).where(UserRow.default_project == project_id)
                             .limit(1)).first() is not None

    def project_roles(self, user_id: str) -> dict[str, Role]:
        """The user's role in each project they own or were given access to."""
        with self.meta.reading() as s:
            roles: dict[str, Role] = {
                project: role for project, role in s.execute(
                    select(MemberRow.project_id, MemberRow.role)
                    .where(MemberRow.user_id == user_id))}
            roles.update((project, "owner") for project in s.scalars(
                select(ProjectRow.id).where(ProjectRow.owner == user_id)))
            return roles

    def page_projects(self, user_id: str, limit: int,
                      after: Key | None = None) -> Page[Project]:
        """Projects the user owns or was given, oldest first, one page."""
        with self.meta.reading() as s:
            member_of = select(MemberRow.project_id).where(MemberRow.user_id == user_id)
            query = select(ProjectRow).where(or_(ProjectRow.owner == user_id,
                                                 ProjectRow.id.in_(member_of)))
            return page_rows(s.scalars(keyset(query, ProjectRow, limit, after)), limit,
                             _project)

    def list_projects(self, user_id: str) -> list[Project]:
        with self.meta.reading() as s:
            member_of = select(MemberRow.project_id).where(MemberRow.user_id == user_id)
            rows = s.scalars(select(ProjectRow).where(or_(ProjectRow.owner == user_id,
                                                          ProjectRow.id.in_(member_of)))
                             .order_by(ProjectRow.created_at))
            return [_project(r) for r in rows]

    def add_member(self, project_id: str, user_id: str, role: Role) -> None:
        """Grant (or change) a user's access to a project."""
        with self.meta.session() as s:
            row = s.get(MemberRow, (project_id, user_id))
            if row is None:
                s.add(MemberRow(project_id=project_id, user_id=user_id, role=role,
                                created_at=_now()))
            else:
                row.role = role

    def remove_member(self, project_id: str, user_id: str) -> bool:
        with self.meta.session() as s:
            result = s.execute(delete(MemberRow).where(MemberRow.project_id == project_id,
                                                       MemberRow.user_id == user_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def list_members(self, project_id: str) -> list[Membership]:
        """The owner first, then members in the order they joined."""
        with self.meta.reading() as s:
            project = s.get(ProjectRow, project_id)
            out: list[Membership] = []
            if project is not None and project.owner:
                owner = s.get(UserRow, project.owner)
                if owner is not None:
                    out.append(Membership(project_id=project_id, user_id=owner.id,
                                          email=owner.email, role="owner",
                                          created_at=project.created_at))
            rows = s.execute(select(MemberRow, UserRow).join(UserRow,
                                                             UserRow.id == MemberRow.user_id)
                             .where(MemberRow.project_id == project_id)
                             .order_by(MemberRow.created_at))
            for member, user in rows:
                out.append(Membership(project_id=project_id, user_id=user.id, email=user.email,
                                      role=member.role,  # type: ignore[arg-type]
                                      created_at=member.created_at))
            return out

    def role_of(self, project_id: str, user_id: str) -> Role | None:
        with self.meta.reading() as s:
            project = s.get(ProjectRow, project_id)
            if project is None:
                return None
            if project.owner == user_id:
                return "owner"
            row = s.get(MemberRow, (project_id, user_id))
            return None if row is None else row.role  # type: ignore[return-value]

    # visibility of the engine's records ---------------------------------------------------

    def resolve(self, what: str, ref: str, projects: set[str]) -> list[tuple[str, str]]:
        """``(id, project)`` of the ``what`` (model, dataset, run) with id ``ref``, else of
        those named ``ref``, within ``projects``, newest first."""
        table = _REF_TABLES[what]
        if not projects:
            return []
        with self.meta.reading() as s:
            row = s.get(table, ref)
            if row is not None and row.project in projects:
                return [(row.id, row.project)]
            query = (select(table.id, table.project)
                     .where(table.name == ref, table.project.in_(projects))
                     .order_by(table.created_at.desc()))
            return [(found.id, found.project) for found in s.execute(query)]

    def find_visible_run(self, run_id: str, user_id: str, *, logs: bool = True) -> Run | None:
        """The run with id ``run_id`` when it is in a project ``user_id`` owns or was given,
        else None (its steps' logs only with ``logs``): one session, the fast path of a
        request that names a run by id."""
        with self.meta.read_connection() as c:
            row = c.execute(_VISIBLE_RUN, {"run_id": run_id, "user_id": user_id}).first()
            return None if row is None else self.meta.runs_of(c, [row], logs=logs)[0]

    def page_visible_runs(self, user_id: str, limit: int, after: Key | None = None,
                          status: str | None = None) -> Page[Run]:
        """The runs of every project ``user_id`` owns or was given, newest first, one page:
        one connection, and the first page (the common request) from a statement built
        once, like :meth:`find_visible_run`."""
        with self.meta.read_connection() as c:
            if after is None:
                rows = c.execute(_VISIBLE_RUNS[status is not None], {
                    "user_id": user_id, "status": status, "limit": limit + 1}).all()
            else:
                query = select(*RUN_COLUMNS).where(RunRow.project.in_(_VISIBLE_PROJECTS))
                if status is not None:
                    query = query.where(RunRow.status == status)
                rows = c.execute(keyset(query, RunRow, limit, after, newest_first=True),
                                 {"user_id": user_id}).all()
            by_id = {run.id: run for run in self.meta.runs_of(c, rows[:limit], logs=False)}
            return page_rows(rows, limit, lambda row: by_id[row.id])

    def run_artifacts(self, run_id: str) -> list[str]:
        """Shas a run may hand out: its input model, its step outputs and its output."""
        with self.meta.reading() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                return []
            shas: list[str] = []
            model = s.get(ModelRow, run.model_id)
            if model is not None:
                shas.append(model.artifact_sha)
            steps = s.scalars(select(StepRow.output_sha).where(StepRow.run_id == run_id)
                              .order_by(StepRow.index))
            shas.extend(sha for sha in steps if sha)
            if run.output_sha:
                shas.append(run.output_sha)
            return list(dict.fromkeys(shas))

    def owners_and_members(self, project_id: str) -> list[str]:
        """Email addresses of everyone with access to a project."""
        return [m.email for m in self.list_members(project_id)]

    # external transformers, templates, webhooks -------------------------------------------

    def add_external(self, item: ExternalTransformer) -> ExternalTransformer:
        self._insert(ExternalTransformerRow(**item.model_dump()),
                     f"a transformer named {item.name!r} already exists in project "
                     f"{item.project!r}; pick another name")
        return item

    def list_externals(self, projects: set[str]) -> list[ExternalTransformer]:
        return [ExternalTransformer.model_validate(r, from_attributes=True)
                for r in self._in_projects(ExternalTransformerRow, projects)]

    def add_template(self, item: PipelineTemplate) -> PipelineTemplate:
        self._insert(PipelineTemplateRow(**item.model_dump()),
                     f"a template named {item.name!r} already exists in project "
                     f"{item.project!r}; pick another name")
        return item

    def list_templates(self, projects: set[str]) -> list[PipelineTemplate]:
        return [PipelineTemplate.model_validate(r, from_attributes=True)
                for r in self._in_projects(PipelineTemplateRow, projects)]

    def add_webhook(self, item: Webhook) -> Webhook:
        with self.meta.session() as s:
            s.add(WebhookRow(**item.model_dump()))
        return item

    def list_webhooks(self, projects: set[str]) -> list[Webhook]:
        return [Webhook.model_validate(r, from_attributes=True)
                for r in self._in_projects(WebhookRow, projects)]

    def page_webhooks(self, projects: set[str], limit: int,
                      after: Key | None = None) -> Page[Webhook]:
        if not projects:
            return Page([])
        with self.meta.reading() as s:
            query = select(WebhookRow).where(WebhookRow.project.in_(projects))
            return page_rows(s.scalars(keyset(query, WebhookRow, limit, after)), limit,
                             lambda r: Webhook.model_validate(r, from_attributes=True))

    def delete_webhook(self, webhook_id: str, projects: set[str]) -> bool:
        if not projects:
            return False
        with self.meta.session() as s:
            result = s.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id,
                                                        WebhookRow.project.in_(projects)))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # helpers ------------------------------------------------------------------------------

    def _insert(self, row: Any, conflict_message: str) -> None:
        try:
            with self.meta.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise ConflictError(conflict_message) from exc

    def _in_projects(self, table: Any, projects: set[str]) -> list[Any]:
        if not projects:
            return []
        with self.meta.reading() as s:
            return list(s.scalars(select(table).where(table.project.in_(projects))
                                  .order_by(table.created_at)))


def _user(row: UserRow) -> User:
    return User(id=row.id, email=row.email, name=row.name, default_project=row.default_project,
                is_admin=row.is_admin, created_at=row.created_at)


def _token(row: TokenRow) -> ApiToken:
    return ApiToken(id=row.id, user_id=row.user_id, name=row.name,
                    kind=row.kind,  # type: ignore[arg-type]
                    created_at=row.created_at, expires_at=row.expires_at)


def _project(row: ProjectRow) -> Project:
    return Project(id=row.id, name=row.name, owner=row.owner, created_at=row.created_at)


#: The projects the user ``user_id`` owns or was given.
_VISIBLE_PROJECTS = union(select(ProjectRow.id).where(ProjectRow.owner == bindparam("user_id")),
                          select(MemberRow.project_id)
                          .where(MemberRow.user_id == bindparam("user_id")))
#: Built once: building and keying the statement cost more than running it.
_VISIBLE_RUN = select(*RUN_COLUMNS).where(RunRow.id == bindparam("run_id"),
                                          RunRow.project.in_(_VISIBLE_PROJECTS))
#: The first pages of the user's runs, newest first, by status filter (None: any).
_VISIBLE_RUNS = {status: keyset(select(*RUN_COLUMNS).where(
    RunRow.project.in_(_VISIBLE_PROJECTS),
    *([RunRow.status == bindparam("status")] if status else [])), RunRow,
    0, newest_first=True).limit(bindparam("limit")) for status in (False, True)}
