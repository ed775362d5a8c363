"""Request and response bodies of the fleet routes (``/api/v1/fleet``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.domain.fleet import DeviceEvent, FleetDevice, InferenceJob

__all__ = ["DeviceCreate", "DeviceDetail", "DeviceEnrollment", "HealthOptions",
           "InferenceCreate", "ReleaseCreate", "RolloutCreate"]

_Name = Annotated[str, Field(pattern=NAME_PATTERN)]
_TagKey = Annotated[str, Field(min_length=1, max_length=64)]
_TagValue = Annotated[str, Field(max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_Body):
    name: _Name
    groups: list[_Name] = Field(default_factory=list, max_length=16)
    profile: str | None = Field(default=None, max_length=100,
                                description="A device profile of the catalog (or custom)")
    tags: dict[_TagKey, _TagValue] = Field(default_factory=dict, max_length=32)
    project: str | None = Field(default=None, max_length=100)


class DeviceEnrollment(FleetDevice):
    enrollment_code: str = Field(description="One-time code for `tinymlaas agent --token`; "
                                 "shown once")
    code_expires_at: datetime


class DeviceDetail(FleetDevice):
    history: list[DeviceEvent]
    inference: list[InferenceJob]


class HealthOptions(_Body):
    name: str | None = Field(default=None, max_length=100)
    atol: float | None = Field(default=None, ge=0, le=1e6, description="Health-check "
                               "tolerance (default: 1 % of the golden outputs' range)")
    rtol: float = Field(default=0.0, ge=0, le=10)
    max_latency_ms: float | None = Field(default=None, gt=0, le=1e7, description="Latency "
                                         "bound of the health check (default: 50x the run's "
                                         "host latency, at least 100 ms)")


class ReleaseCreate(HealthOptions):
    run: str = Field(max_length=100, description="A finished run ending in an installer")


class RolloutCreate(HealthOptions):
    group: _Name
    run: str | None = Field(default=None, max_length=100, description="Release this run's "
                            "installer output first (or give release)")
    release: str | None = Field(default=None, max_length=100)
    waves: list[int] = Field(default=[100], min_length=1, max_length=10,
                             description="Cumulative percentages of the group, e.g. [10, 100]")
    error_threshold: float = Field(default=0.2, ge=0, le=1, description="Failure rate of a "
                                   "wave past which the rollout pauses")


class InferenceCreate(_Body):
    dataset: str = Field(max_length=100, description="Its test split is sent to the device")
    limit: int = Field(default=100, ge=1, le=1000)
