"""Pipeline templates: the shipped ones and those saved in your projects."""

from fastapi import APIRouter, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import TemplateCreate, TemplatePublic
from tinymlaas.store.accounts import PipelineTemplate

router = APIRouter(prefix="/templates", tags=["templates"], responses=AUTH_ERRORS)


def _public(item: PipelineTemplate) -> TemplatePublic:
    return TemplatePublic(**item.model_dump(exclude={"created_at"}),
                          builtin=item.project == "builtin")


@router.get("", response_model=list[TemplatePublic], responses=PAGED)
def list_templates(ws: WorkspaceDep, paging: PagingDep) -> object:
    """The shipped templates by name, then those of your projects, oldest first."""
    return [_public(t) for t in paging.of(ws.list_templates(), lambda t: (
        ("0", t.name) if t.project == "builtin" else ("1", t.created_at.isoformat(), t.id)))]


@router.post("", response_model=TemplatePublic, status_code=status.HTTP_201_CREATED)
def create_template(body: TemplateCreate, ws: WorkspaceDep) -> object:
    """Save a pipeline under a name (its steps and params are validated)."""
    return _public(ws.create_template(body.name, body.pipeline.as_dict(),
                                      description=body.description, project=body.project))


@router.get("/{name}", response_model=TemplatePublic)
def get_template(name: str, ws: WorkspaceDep) -> object:
    return _public(ws.get_template(name))
