"""Devices: the shipped catalog plus the custom devices of the user's projects."""

from fastapi import APIRouter, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import StudioDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import DeviceCreate, DevicePublic
from tinymlaas.domain import Device

router = APIRouter(prefix="/devices", tags=["devices"], responses=AUTH_ERRORS)


@router.get("", response_model=list[DevicePublic], responses=PAGED)
def list_devices(studio: StudioDep, ws: WorkspaceDep, paging: PagingDep) -> object:
    """The catalog by name, then the custom devices of the user's projects."""
    return paging.of(studio.services.list_devices(ws.projects),
                     lambda d: ("1" if d.custom else "0", d.name, d.project or ""))


@router.post("", response_model=DevicePublic, status_code=status.HTTP_201_CREATED)
def add_device(body: DeviceCreate, studio: StudioDep, ws: WorkspaceDep) -> object:
    """Register a custom device in a project (visible to that project's members)."""
    project = ws.project_id(body.project, write=True)
    return studio.services.add_device(
        Device(**body.model_dump(exclude={"project"}), custom=True, project=project))


@router.get("/{name}", response_model=DevicePublic)
def get_device(name: str, studio: StudioDep, ws: WorkspaceDep) -> object:
    return studio.services.get_device(name, ws.projects)
