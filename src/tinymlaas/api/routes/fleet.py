"""The fleet (user side): enroll devices, make releases from runs, deploy them in waves,
pause, resume, cancel and roll back, and ask a device to run inputs. Devices themselves use
the DDI routes (:mod:`tinymlaas.api.routes.ddi`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import StudioDep, WorkspaceDep
from tinymlaas.api.fleet_schemas import (
    DeviceCreate,
    DeviceDetail,
    DeviceEnrollment,
    HealthOptions,
    InferenceCreate,
    ReleaseCreate,
    RolloutCreate,
)
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.domain.fleet import FleetDevice, InferenceJob, Release, Rollout
from tinymlaas.errors import PayloadTooLargeError
from tinymlaas.service.fleet import CODE_TTL, MAX_RESULT_BYTES, FleetView

__all__ = ["router"]

router = APIRouter(prefix="/fleet", tags=["fleet"], responses=AUTH_ERRORS)

async def get_fleet(ws: WorkspaceDep, studio: StudioDep) -> FleetView:
    return FleetView(studio.fleet, ws)


FleetDep = Annotated[FleetView, Depends(get_fleet)]


def _release_options(body: HealthOptions) -> dict[str, Any]:
    return body.model_dump(include={"name", "atol", "rtol", "max_latency_ms"})


@router.post("/devices", response_model=DeviceEnrollment, status_code=status.HTTP_201_CREATED)
def enroll_device(body: DeviceCreate, fleet: FleetDep) -> object:
    """Add a device and get its one-time enrollment code (valid 24 hours) for the agent."""
    device, code = fleet.enroll(body.name, groups=body.groups, profile=body.profile,
                                tags=body.tags, project=body.project)
    return DeviceEnrollment(**device.model_dump(), enrollment_code=code,
                            code_expires_at=device.created_at + CODE_TTL)


@router.get("/devices", response_model=list[FleetDevice], responses=PAGED)
def list_devices(fleet: FleetDep, paging: PagingDep,
                 project: Annotated[str | None, Query(max_length=100)] = None,
                 group: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """The devices of the user's projects (or one), by project and name, a page at a time."""
    return paging.send(fleet.page_devices(paging.limit, paging.after, project, group))


@router.get("/devices/{ref}", response_model=DeviceDetail)
def get_device(ref: str, fleet: FleetDep) -> object:
    """A device with its history (newest first) and its inference jobs."""
    device = fleet.device(ref)
    return DeviceDetail(**device.model_dump(), history=fleet.fleet.history(device),
                        inference=fleet.fleet.jobs(device))


@router.post("/devices/{ref}/revoke", response_model=FleetDevice)
def revoke_device(ref: str, fleet: FleetDep) -> object:
    """Revoke the device's credential; its pending updates are cancelled."""
    return fleet.fleet.revoke(fleet.device(ref, write=True))


@router.post("/devices/{ref}/enrollment-code", response_model=DeviceEnrollment)
def renew_enrollment_code(ref: str, fleet: FleetDep) -> object:
    """A new one-time enrollment code (the current credential stops working)."""
    device = fleet.device(ref, write=True)
    code = fleet.fleet.renew_code(device)
    device = fleet.device(device.id)
    return DeviceEnrollment(**device.model_dump(), enrollment_code=code,
                            code_expires_at=datetime.now(device.created_at.tzinfo) + CODE_TTL)


@router.post("/devices/{ref}/inference", response_model=InferenceJob,
             status_code=status.HTTP_202_ACCEPTED)
def request_inference(ref: str, body: InferenceCreate, fleet: FleetDep) -> object:
    """Send a dataset's test split to the device's agent, which runs it on the installed
    release and reports outputs and latency measured on the device."""
    return fleet.inference(ref, body.dataset, body.limit)


@router.post("/devices/{ref}/inference/samples", response_model=InferenceJob,
             status_code=status.HTTP_202_ACCEPTED)
async def request_inference_on_samples(
        ref: str, fleet: FleetDep, file: Annotated[UploadFile, File(description=(
            "An NPZ: one array per model input (input/<name> or <name>), samples first"))],
        limit: Annotated[int, Form(ge=1, le=1000)] = 100) -> object:
    """Send your own samples (an NPZ, at most 64 MiB) to the device's agent, which runs
    them on the installed release and reports outputs and latency measured on the device."""
    data = await file.read(MAX_RESULT_BYTES + 1)
    if len(data) > MAX_RESULT_BYTES:
        raise PayloadTooLargeError("the samples are larger than 64 MiB")
    return await run_in_threadpool(fleet.inference, ref, None, limit, samples=data)


@router.get("/inference/{job_id}", response_model=InferenceJob)
def get_inference(job_id: str, fleet: FleetDep) -> object:
    """An inference job; once ``done``, the device-measured accuracy and latency."""
    return fleet.job(job_id)


@router.post("/releases", response_model=Release, status_code=status.HTTP_201_CREATED)
def create_release(body: ReleaseCreate, fleet: FleetDep) -> object:
    """Make a signed release of a finished run's installer output, with its golden input
    for the devices' health check."""
    return fleet.create_release(body.run, **_release_options(body))


@router.get("/releases", response_model=list[Release], responses=PAGED)
def list_releases(fleet: FleetDep, paging: PagingDep,
                  project: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """Releases, by project, newest version first, a page at a time."""
    return paging.send(fleet.page_releases(paging.limit, paging.after, project))


@router.get("/releases/{ref}", response_model=Release)
def get_release(ref: str, fleet: FleetDep) -> object:
    return fleet.release(ref)


@router.post("/rollouts", response_model=Rollout, status_code=status.HTTP_201_CREATED)
def create_rollout(body: RolloutCreate, fleet: FleetDep) -> object:
    """Deploy a release (or a run, released first) to a group in waves."""
    return fleet.deploy(body.group, run=body.run, release=body.release, waves=body.waves,
                        error_threshold=body.error_threshold, **_release_options(body))


@router.get("/rollouts", response_model=list[Rollout], responses=PAGED)
def list_rollouts(fleet: FleetDep, paging: PagingDep,
                  project: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """Rollouts, newest first, each with its devices' actions and counts by state, a page
    at a time."""
    return paging.send(fleet.page_rollouts(paging.limit, paging.after, project))


@router.get("/rollouts/{ref}", response_model=Rollout)
def get_rollout(ref: str, fleet: FleetDep) -> object:
    return fleet.rollout(ref)


@router.post("/rollouts/{ref}/pause", response_model=Rollout)
def pause_rollout(ref: str, fleet: FleetDep) -> object:
    """Offer nothing new (devices that started finish)."""
    return fleet.fleet.pause(fleet.rollout(ref, write=True))


@router.post("/rollouts/{ref}/resume", response_model=Rollout)
def resume_rollout(ref: str, fleet: FleetDep) -> object:
    """Go on, past a failure threshold if that paused it."""
    return fleet.fleet.resume(fleet.rollout(ref, write=True))


@router.post("/rollouts/{ref}/cancel", response_model=Rollout)
def cancel_rollout(ref: str, fleet: FleetDep) -> object:
    """Withdraw every offer not yet taken."""
    return fleet.fleet.cancel(fleet.rollout(ref, write=True))


@router.post("/rollouts/{ref}/rollback", response_model=Rollout,
             status_code=status.HTTP_201_CREATED)
def rollback_rollout(ref: str, fleet: FleetDep) -> object:
    """Stop this rollout and deploy the group's previous release again (as a new version,
    so devices never go backwards); returns the new rollout."""
    return fleet.fleet.rollback(fleet.rollout(ref, write=True))
