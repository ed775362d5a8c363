"""The fleet in the metadata store (revision ``0008``): devices, releases, rollouts, their
per-device actions, device history and on-device inference jobs.

Device credentials and enrollment codes are kept as sha256 only. Redeeming a code is one
conditional update, so a code works once even when two devices race for it.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    CursorResult,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tinymlaas.domain.fleet import (
    ActionState,
    DeviceAction,
    DeviceEvent,
    FleetDevice,
    InferenceJob,
    Release,
    Rollout,
    RolloutState,
)
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store.metadata import MetadataStore
from tinymlaas.store.tables import Base

__all__ = ["FleetStore"]

#: A poll updates ``last_seen_at`` at most this often (a write per poll would not scale).
SEEN_RESOLUTION = timedelta(seconds=5)
#: Events kept per device (older ones are dropped): a device that reports in a loop cannot
#: grow the database without bound.
MAX_EVENTS = 500


def _now() -> datetime:
    return datetime.now(UTC)


class DeviceRow(Base):
    __tablename__ = "fleet_devices"
    __table_args__ = (UniqueConstraint("project", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(100))
    profile: Mapped[str | None] = mapped_column(String(100))
    groups: Mapped[list[Any]] = mapped_column(JSON)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    code_expires_at: Mapped[datetime | None]
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrolled_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    version: Mapped[int | None] = mapped_column(Integer)
    release_id: Mapped[str | None] = mapped_column(String(40))
    health: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]


class ReleaseRow(Base):
    __tablename__ = "fleet_releases"
    __table_args__ = (UniqueConstraint("project", "version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(40))
    package_sha: Mapped[str] = mapped_column(String(64))
    package_name: Mapped[str] = mapped_column(String(200))
    package_kind: Mapped[str] = mapped_column(String(40))
    golden_sha: Mapped[str | None] = mapped_column(String(64))
    device_profile: Mapped[str | None] = mapped_column(String(100))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    rollback_of: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]


class RolloutRow(Base):
    __tablename__ = "fleet_rollouts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    release_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    group_name: Mapped[str] = mapped_column(String(100))
    waves: Mapped[list[Any]] = mapped_column(JSON)
    error_threshold: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(20))
    current_wave: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class ActionRow(Base):
    __tablename__ = "fleet_actions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rollout_id: Mapped[str] = mapped_column(String(40), index=True)
    device_id: Mapped[str] = mapped_column(String(40), index=True)
    device_name: Mapped[str] = mapped_column(String(100))
    release_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    wave: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class EventRow(Base):
    __tablename__ = "fleet_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(40), index=True)
    action_id: Mapped[str | None] = mapped_column(String(40))
    version: Mapped[int | None] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class InferenceRow(Base):
    __tablename__ = "fleet_inference"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    device_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    inputs_sha: Mapped[str] = mapped_column(String(64))
    samples: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    version: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[list[Any]] = mapped_column(JSON)
    outputs_sha: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


def _fields(row: Base, model: type[Any], **renamed: str) -> dict[str, Any]:
    return {name: getattr(row, renamed.get(name, name)) for name in model.model_fields
            if hasattr(row, renamed.get(name, name))}


def _device(row: DeviceRow) -> FleetDevice:
    return FleetDevice.model_validate(_fields(row, FleetDevice))


def _release(row: ReleaseRow) -> Release:
    return Release.model_validate(_fields(row, Release))


def _action(row: ActionRow) -> DeviceAction:
    return DeviceAction.model_validate(_fields(row, DeviceAction))


def _rollout(row: RolloutRow) -> Rollout:
    return Rollout.model_validate(_fields(row, Rollout, group="group_name"))


def _job(row: InferenceRow) -> InferenceJob:
    return InferenceJob.model_validate(_fields(row, InferenceJob))


def _not_found(what: str, ref: str) -> NotFoundError:
    return NotFoundError(f"{what} {ref!r} not found", {"kind": what, "ref": ref})


class FleetStore:
    """Fleet records on a :class:`MetadataStore`'s database."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    # devices ------------------------------------------------------------------------------

    def add_device(self, device: FleetDevice, code_hash: str, expires_at: datetime) -> None:
        try:
            with self.meta.session() as s:
                s.add(DeviceRow(**device.model_dump(exclude={"enrolled"}), code_hash=code_hash,
                                code_expires_at=expires_at, token_hash=None))
        except IntegrityError:
            raise ConflictError(f"the project already has a device named {device.name!r}",
                                {"kind": "device", "name": device.name}) from None

    def get_device(self, ref: str, projects: Collection[str] | None = None) -> FleetDevice:
        """By id, or by name within ``projects``."""
        with self.meta.session() as s:
            query = select(DeviceRow).where((DeviceRow.id == ref) | (DeviceRow.name == ref))
            if projects is not None:
                query = query.where(DeviceRow.project.in_(list(projects)))
            rows = s.scalars(query.order_by(DeviceRow.created_at)).all()
            if not rows:
                raise _not_found("device", ref)
            exact = [r for r in rows if r.id == ref]
            if not exact and len({r.project for r in rows}) > 1:
                raise ConflictError(f"device name {ref!r} is used in several of your projects; "
                                    "give its id", {"kind": "device", "ref": ref})
            return _device((exact or rows)[0])

    def list_devices(self, projects: Collection[str],
                     group: str | None = None) -> builtins.list[FleetDevice]:
        if not projects:
            return []
        with self.meta.session() as s:
            rows = s.scalars(select(DeviceRow).where(DeviceRow.project.in_(list(projects)))
                             .order_by(DeviceRow.project, DeviceRow.name)).all()
            found = [_device(r) for r in rows]
        return [d for d in found if group is None or group in d.groups]

    def device_by_token(self, token_hash: str) -> FleetDevice | None:
        with self.meta.session() as s:
            row = s.scalars(select(DeviceRow).where(DeviceRow.token_hash == token_hash)).first()
            return None if row is None or row.revoked_at is not None else _device(row)

    def redeem_code(self, code_hash: str, token_hash: str) -> FleetDevice | None:
        """Turn a valid, unexpired code into a credential (once); None when it is not one."""
        now = _now()
        query = (update(DeviceRow)
                 .where(DeviceRow.code_hash == code_hash, DeviceRow.revoked_at.is_(None),
                        DeviceRow.code_expires_at > now)
                 .values(code_hash=None, code_expires_at=None, token_hash=token_hash,
                         enrolled_at=now, last_seen_at=now))
        with self.meta.session() as s:
            done = cast(CursorResult[Any], s.execute(
                query, execution_options={"synchronize_session": False})).rowcount
            if not done:
                return None
            row = s.scalars(select(DeviceRow).where(DeviceRow.token_hash == token_hash)).one()
            return _device(row)

    def new_code(self, device_id: str, code_hash: str, expires_at: datetime) -> None:
        """A fresh enrollment code; the device's credential (if any) stops working."""
        with self.meta.session() as s:
            row = s.get(DeviceRow, device_id)
            if row is None:
                raise _not_found("device", device_id)
            row.code_hash, row.code_expires_at = code_hash, expires_at
            row.token_hash, row.revoked_at, row.enrolled_at = None, None, None

    def revoke(self, device_id: str) -> FleetDevice:
        with self.meta.session() as s:
            row = s.get(DeviceRow, device_id)
            if row is None:
                raise _not_found("device", device_id)
            row.revoked_at = row.revoked_at or _now()
            row.token_hash = row.code_hash = None
            return _device(row)

    def delete_device(self, device_id: str) -> None:
        with self.meta.session() as s:
            row = s.get(DeviceRow, device_id)
            if row is not None:
                s.delete(row)

    def seen(self, device: FleetDevice) -> None:
        now = _now()
        if device.last_seen_at is not None and now - device.last_seen_at < SEEN_RESOLUTION:
            return
        with self.meta.session() as s:
            s.execute(update(DeviceRow).where(DeviceRow.id == device.id)
                      .values(last_seen_at=now), execution_options={"synchronize_session": False})

    def set_installed(self, device_id: str, *, health: str, version: int | None = None,
                      release_id: str | None = None) -> None:
        values: dict[str, Any] = {"health": health}
        if version is not None:
            values.update(version=version, release_id=release_id)
        with self.meta.session() as s:
            s.execute(update(DeviceRow).where(DeviceRow.id == device_id).values(**values),
                      execution_options={"synchronize_session": False})

    def add_event(self, device_id: str, stage: str, message: str = "", *,
                  action_id: str | None = None, version: int | None = None) -> None:
        with self.meta.session() as s:
            s.add(EventRow(device_id=device_id, action_id=action_id, version=version,
                           stage=stage, message=message[:2000], at=_now()))
            s.flush()
            oldest_kept = s.scalars(select(EventRow.id).where(EventRow.device_id == device_id)
                                    .order_by(EventRow.id.desc()).offset(MAX_EVENTS - 1)
                                    .limit(1)).first()
            if oldest_kept is not None:
                s.execute(delete(EventRow).where(EventRow.device_id == device_id,
                                                 EventRow.id < oldest_kept),
                          execution_options={"synchronize_session": False})

    def history(self, device_id: str, limit: int = 200) -> builtins.list[DeviceEvent]:
        with self.meta.session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.device_id == device_id)
                             .order_by(EventRow.id.desc()).limit(limit)).all()
            return [DeviceEvent(at=r.at, action_id=r.action_id, version=r.version,
                                stage=r.stage, message=r.message) for r in rows]

    # releases -----------------------------------------------------------------------------

    def next_version(self, project: str) -> int:
        with self.meta.session() as s:
            top = s.scalar(select(func.max(ReleaseRow.version))
                           .where(ReleaseRow.project == project))
            return int(top or 0) + 1

    def add_release(self, release: Release) -> Release:
        """Raises ConflictError when the version was taken meanwhile (the caller retries)."""
        try:
            with self.meta.session() as s:
                s.add(ReleaseRow(**release.model_dump()))
        except IntegrityError:
            raise ConflictError(f"release version {release.version} was just taken") from None
        return release

    def get_release(self, ref: str, projects: Collection[str] | None = None) -> Release:
        with self.meta.session() as s:
            row = s.get(ReleaseRow, ref)
            if row is None or (projects is not None and row.project not in projects):
                raise _not_found("release", ref)
            return _release(row)

    def list_releases(self, projects: Collection[str]) -> builtins.list[Release]:
        if not projects:
            return []
        with self.meta.session() as s:
            rows = s.scalars(select(ReleaseRow).where(ReleaseRow.project.in_(list(projects)))
                             .order_by(ReleaseRow.project, ReleaseRow.version.desc())).all()
            return [_release(r) for r in rows]

    # rollouts and actions -----------------------------------------------------------------

    def add_rollout(self, rollout: Rollout, actions: builtins.list[DeviceAction]) -> None:
        with self.meta.session() as s:
            s.add(RolloutRow(**rollout.model_dump(exclude={"group", "counts", "actions"}),
                             group_name=rollout.group))
            for action in actions:
                s.add(ActionRow(**action.model_dump()))

    def get_rollout(self, ref: str, projects: Collection[str] | None = None, *,
                    actions: bool = True) -> Rollout:
        """A rollout with its actions and counts (without: the row alone, what a device's
        poll needs)."""
        with self.meta.session() as s:
            row = s.get(RolloutRow, ref)
            if row is None or (projects is not None and row.project not in projects):
                raise _not_found("rollout", ref)
            rollout = _rollout(row)
        if not actions:
            return rollout
        actions = self.actions_of(rollout.id)
        counts: dict[str, int] = {}
        for action in actions:
            counts[action.state.value] = counts.get(action.state.value, 0) + 1
        return rollout.model_copy(update={"actions": actions, "counts": counts})

    def list_rollouts(self, projects: Collection[str]) -> builtins.list[Rollout]:
        if not projects:
            return []
        with self.meta.session() as s:
            ids = s.scalars(select(RolloutRow.id).where(RolloutRow.project.in_(list(projects)))
                            .order_by(RolloutRow.created_at.desc()).limit(200)).all()
        return [self.get_rollout(i) for i in ids]

    def update_rollout(self, rollout_id: str, **values: Any) -> None:
        if "state" in values and isinstance(values["state"], RolloutState):
            values["state"] = values["state"].value
        with self.meta.session() as s:
            s.execute(update(RolloutRow).where(RolloutRow.id == rollout_id).values(**values),
                      execution_options={"synchronize_session": False})

    def actions_of(self, rollout_id: str) -> builtins.list[DeviceAction]:
        with self.meta.session() as s:
            rows = s.scalars(select(ActionRow).where(ActionRow.rollout_id == rollout_id)
                             .order_by(ActionRow.wave, ActionRow.device_name)).all()
            return [_action(r) for r in rows]

    def open_action(self, device_id: str) -> DeviceAction | None:
        """The device's newest offered or running action."""
        with self.meta.session() as s:
            row = s.scalars(select(ActionRow).where(
                ActionRow.device_id == device_id,
                ActionRow.state.in_([ActionState.offered.value, ActionState.running.value]))
                .order_by(ActionRow.updated_at.desc())).first()
            return None if row is None else _action(row)

    def get_action(self, action_id: str, device_id: str) -> DeviceAction:
        with self.meta.session() as s:
            row = s.get(ActionRow, action_id)
            if row is None or row.device_id != device_id:
                raise _not_found("action", action_id)
            return _action(row)

    def set_action(self, action_id: str, state: ActionState, *, stage: str | None = None,
                   message: str | None = None, only_from: Collection[ActionState] = ()) -> bool:
        """Move an action to ``state`` (only from ``only_from`` states when given)."""
        values: dict[str, Any] = {"state": state.value, "updated_at": _now()}
        if stage is not None:
            values["stage"] = stage
        if message is not None:
            values["message"] = message[:2000]
        query = update(ActionRow).where(ActionRow.id == action_id)
        if only_from:
            query = query.where(ActionRow.state.in_([s.value for s in only_from]))
        with self.meta.session() as s:
            return bool(cast(CursorResult[Any], s.execute(
                query.values(**values), execution_options={"synchronize_session": False}))
                .rowcount)

    def move_actions(self, *, to: ActionState, message: str, rollout_id: str | None = None,
                     device_ids: Collection[str] | None = None, wave: int | None = None,
                     states: Collection[ActionState] = (), exclude_rollout: str | None = None
                     ) -> int:
        """Move many actions at once (open a wave, cancel a rollout, supersede)."""
        query = update(ActionRow).where(ActionRow.state.in_([s.value for s in states]))
        if rollout_id is not None:
            query = query.where(ActionRow.rollout_id == rollout_id)
        if exclude_rollout is not None:
            query = query.where(ActionRow.rollout_id != exclude_rollout)
        if device_ids is not None:
            query = query.where(ActionRow.device_id.in_(list(device_ids)))
        if wave is not None:
            query = query.where(ActionRow.wave == wave)
        with self.meta.session() as s:
            return cast(CursorResult[Any], s.execute(
                query.values(state=to.value, message=message, updated_at=_now()),
                execution_options={"synchronize_session": False})).rowcount

    # on-device inference ------------------------------------------------------------------

    def add_job(self, job: InferenceJob) -> InferenceJob:
        with self.meta.session() as s:
            s.add(InferenceRow(**job.model_dump()))
        return job

    def get_job(self, job_id: str, *, device_id: str | None = None,
                projects: Collection[str] | None = None) -> InferenceJob:
        with self.meta.session() as s:
            row = s.get(InferenceRow, job_id)
            if row is None or (device_id is not None and row.device_id != device_id) or \
                    (projects is not None and row.project not in projects):
                raise _not_found("inference job", job_id)
            return _job(row)

    def next_job(self, device_id: str) -> InferenceJob | None:
        with self.meta.session() as s:
            row = s.scalars(select(InferenceRow).where(
                InferenceRow.device_id == device_id,
                InferenceRow.state.in_(["queued", "running"]))
                .order_by(InferenceRow.created_at)).first()
            return None if row is None else _job(row)

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.meta.session() as s:
            s.execute(update(InferenceRow).where(InferenceRow.id == job_id).values(**values),
                      execution_options={"synchronize_session": False})

    def jobs_of(self, device_id: str, limit: int = 50) -> builtins.list[InferenceJob]:
        with self.meta.session() as s:
            rows = s.scalars(select(InferenceRow).where(InferenceRow.device_id == device_id)
                             .order_by(InferenceRow.created_at.desc()).limit(limit)).all()
            return [_job(r) for r in rows]

    def jobs_for_run(self, run_id: str, project: str,
                     limit: int = 50) -> builtins.list[InferenceJob]:
        """Finished inference jobs of ``project``'s devices that ran a release made from
        ``run_id`` (rollbacks included: they keep the run), newest first."""
        with self.meta.session() as s:
            rows = s.scalars(select(InferenceRow).join(ReleaseRow, (
                ReleaseRow.project == InferenceRow.project)
                & (ReleaseRow.version == InferenceRow.version)).where(
                InferenceRow.project == project, ReleaseRow.run_id == run_id,
                InferenceRow.state == "done")
                .order_by(InferenceRow.created_at.desc()).limit(limit)).all()
            return [_job(r) for r in rows]
