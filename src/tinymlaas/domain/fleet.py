"""Over-the-air deployment: the fleet of physical devices, releases, rollouts in waves, the
per-device actions a rollout makes, and what each device reported.

A *release* is a run's installer output (a wheel, a C bundle, a signed MCUboot image) with a
golden input for the health check and a manifest signed by the project's release key. Its
``version`` grows by one per project, never reused: rolling back makes a *new* release
with the previous one's files and a higher version, so a device's anti-rollback check
(it never installs a version at or below its own) holds even then.

A *rollout* offers a release to the devices of a group in waves (cumulative percentages,
e.g. ``[10, 100]``). A wave opens when every device of the one before has ended and their
failure rate stays within the rollout's threshold; past it, the rollout pauses by itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ActionState", "DeviceAction", "DeviceEvent", "FleetDevice", "InferenceJob",
           "Release", "Rollout", "RolloutState", "device_health"]


def _now() -> datetime:
    return datetime.now(UTC)


class FleetDevice(BaseModel):
    """A physical device of a project (not a catalog profile: it *has* one)."""

    id: str
    project: str
    name: str
    profile: str | None = None
    groups: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    enrolled_at: datetime | None = None
    revoked_at: datetime | None = None
    last_seen_at: datetime | None = None
    version: int | None = Field(default=None, description="the committed release version")
    release_id: str | None = None
    health: str = Field(default="unknown", description="unknown, ok, failed or revoked")
    created_at: datetime = Field(default_factory=_now)

    @property
    def enrolled(self) -> bool:
        return self.enrolled_at is not None


class Release(BaseModel):
    id: str
    project: str
    name: str
    version: int
    run_id: str | None = None
    package_sha: str
    package_name: str
    package_kind: str
    golden_sha: str | None = None
    device_profile: str | None = None
    manifest: dict[str, Any] = Field(description="the signed envelope")
    manifest_sha256: str
    rollback_of: str | None = Field(default=None, description="the release whose files this "
                                    "one re-releases (a rollback)")
    created_at: datetime = Field(default_factory=_now)


class RolloutState(StrEnum):
    running = "running"
    paused = "paused"
    finished = "finished"
    cancelled = "cancelled"


class ActionState(StrEnum):
    scheduled = "scheduled"      # its wave has not opened
    offered = "offered"          # the device will see it at its next poll
    running = "running"          # the device reported progress
    succeeded = "succeeded"
    failed = "failed"            # refused or failed; nothing changed on the device
    rolled_back = "rolled_back"  # installed, failed its health check, back on the old one
    cancelled = "cancelled"

    @property
    def ended(self) -> bool:
        return self in {ActionState.succeeded, ActionState.failed, ActionState.rolled_back,
                        ActionState.cancelled}


class DeviceAction(BaseModel):
    """One device's part of a rollout (a DDI action)."""

    id: str
    rollout_id: str
    device_id: str
    device_name: str
    release_id: str
    version: int
    wave: int
    state: ActionState
    stage: str | None = None
    message: str = ""
    updated_at: datetime = Field(default_factory=_now)


class Rollout(BaseModel):
    id: str
    project: str
    release_id: str
    version: int
    group: str
    waves: list[int]
    error_threshold: float
    state: RolloutState
    current_wave: int = 0
    message: str = ""
    created_at: datetime = Field(default_factory=_now)
    counts: dict[str, int] = Field(default_factory=dict)
    actions: list[DeviceAction] = Field(default_factory=list)


class DeviceEvent(BaseModel):
    """A line of a device's history."""

    at: datetime
    action_id: str | None = None
    version: int | None = None
    stage: str
    message: str = ""


class InferenceJob(BaseModel):
    """Inputs the Studio asked a device to run on its installed release."""

    id: str
    project: str
    device_id: str
    dataset_id: str | None = None
    inputs_sha: str
    samples: int
    state: str = "queued"  # queued, running, done, failed
    version: int | None = None
    latency_ms: list[float] = Field(default_factory=list)
    outputs_sha: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str = ""
    created_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None


def device_health(device: FleetDevice) -> str:
    return "revoked" if device.revoked_at else device.health
