"""Projects and sharing them."""

from fastapi import APIRouter, Response, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import (
    DeletionPublic,
    MemberPublic,
    ProjectCreate,
    ProjectPublic,
    ShareCreate,
    SigningKeyPublic,
)

router = APIRouter(prefix="/projects", tags=["projects"], responses=AUTH_ERRORS)


@router.get("", response_model=list[ProjectPublic], responses=PAGED)
def list_projects(ws: WorkspaceDep, paging: PagingDep) -> object:
    """Projects the user owns or that were shared with them, oldest first."""
    return paging.send(ws.page_projects(paging.limit, paging.after))


@router.post("", response_model=ProjectPublic, status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectCreate, ws: WorkspaceDep) -> object:
    """A new project owned by the user."""
    return ws.create_project(body.name)


@router.get("/{project_id}", response_model=ProjectPublic)
def get_project(project_id: str, ws: WorkspaceDep) -> object:
    return ws.get_project(project_id)


@router.delete("/{project_id}", response_model=DeletionPublic)
def delete_project(project_id: str, ws: WorkspaceDep) -> object:
    """Delete the project and everything in it, for every member (owner only; a personal
    project cannot be deleted)."""
    return ws.delete_project(project_id)


@router.get("/{project_id}/members", response_model=list[MemberPublic], responses=PAGED)
def list_members(project_id: str, ws: WorkspaceDep, paging: PagingDep) -> object:
    """The owner, then everyone the project is shared with in the order they joined."""
    return paging.send(ws.page_members(project_id, paging.limit, paging.after))


@router.post("/{project_id}/members", response_model=MemberPublic,
             status_code=status.HTTP_201_CREATED)
def share_project(project_id: str, body: ShareCreate, ws: WorkspaceDep) -> object:
    """Share the project with another registered user (owner only)."""
    return ws.share_project(project_id, body.email, body.role)


@router.delete("/{project_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
def unshare_project(project_id: str, user_id: str, ws: WorkspaceDep) -> Response:
    """Take a member's access away (owner only)."""
    ws.unshare_project(project_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{project_id}/signing-key", response_model=SigningKeyPublic)
def get_signing_key(project_id: str, ws: WorkspaceDep) -> object:
    """The public key that ``sign-image`` signs this project's firmware with (made on first
    use); compile it into the devices' bootloader."""
    return ws.signing_key(project_id)


@router.post("/{project_id}/signing-key/rotate", response_model=SigningKeyPublic)
def rotate_signing_key(project_id: str, ws: WorkspaceDep) -> object:
    """Replace the project's signing key (owner only). The old key is kept, retired, so
    images signed with it can still be verified; new images carry the new key."""
    return ws.signing_key(project_id, rotate=True)
