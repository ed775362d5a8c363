"""Devices: the shipped catalog plus custom devices."""

from fastapi import APIRouter, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import StudioDep, WorkspaceDep
from tinymlaas.api.schemas import DeviceCreate, DevicePublic
from tinymlaas.domain import Device

router = APIRouter(prefix="/devices", tags=["devices"], responses=AUTH_ERRORS)


@router.get("", response_model=list[DevicePublic])
def list_devices(studio: StudioDep, _ws: WorkspaceDep) -> object:
    return studio.services.list_devices()


@router.post("", response_model=DevicePublic, status_code=status.HTTP_201_CREATED)
def add_device(body: DeviceCreate, studio: StudioDep, _ws: WorkspaceDep) -> object:
    """Register a custom device (visible to every user of this server)."""
    return studio.services.add_device(Device(**body.model_dump(), custom=True))


@router.get("/{name}", response_model=DevicePublic)
def get_device(name: str, studio: StudioDep, _ws: WorkspaceDep) -> object:
    return studio.services.get_device(name)
