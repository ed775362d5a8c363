"""Transformers: the steps a pipeline can use, and registering external ones."""

from fastapi import APIRouter, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import ExternalTransformerCreate, TransformerPublic
from tinymlaas.service.workspace import TransformerInfo

router = APIRouter(prefix="/transformers", tags=["transformers"], responses=AUTH_ERRORS)


def _public(item: TransformerInfo) -> TransformerPublic:
    return TransformerPublic(name=item.name, version=item.version, summary=item.summary,
                             accepts=item.accepts, produces=item.produces, needs=item.needs,
                             external=item.external is not None,
                             project=item.external.project if item.external else None,
                             params_schema=item.params_schema)


@router.get("", response_model=list[TransformerPublic], responses=PAGED)
def list_transformers(ws: WorkspaceDep, paging: PagingDep) -> object:
    """Built-in and plug-in transformers by name, then the external ones registered in your
    projects, oldest first."""
    return [_public(t) for t in paging.of(ws.list_transformers(), lambda t: (
        ("1", t.external.created_at.isoformat(), t.external.id) if t.external
        else ("0", t.name)))]


@router.post("", response_model=TransformerPublic, status_code=status.HTTP_201_CREATED)
def register_external(body: ExternalTransformerCreate, ws: WorkspaceDep) -> object:
    """Register a command or container image (file contract: /in, /out, params.json,
    metrics.json) as a named transformer; pipeline step params go into its params.json."""
    params = body.model_dump(include={"command", "image", "produces", "config", "env"},
                             mode="json")
    return _public(ws.register_external(body.name, params, summary=body.summary,
                                        project=body.project))


@router.get("/{name}", response_model=TransformerPublic)
def get_transformer(name: str, ws: WorkspaceDep) -> object:
    """One transformer with the JSON schema of its parameters."""
    return _public(ws.get_transformer(name))
