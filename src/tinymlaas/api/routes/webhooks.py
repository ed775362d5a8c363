"""Webhooks: signed POSTs when a project's run finishes."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import WebhookCreate, WebhookCreated, WebhookPublic

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=AUTH_ERRORS)


@router.get("", response_model=list[WebhookPublic], responses=PAGED)
def list_webhooks(ws: WorkspaceDep, paging: PagingDep,
                  project: Annotated[str | None, Query()] = None) -> object:
    """The webhooks of the user's projects, oldest first."""
    return paging.send(ws.page_webhooks(paging.limit, paging.after, project))


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
def create_webhook(body: WebhookCreate, ws: WorkspaceDep) -> object:
    """Register a URL; each delivery carries ``X-Tinymlaas-Signature: sha256=<hex>``, the
    HMAC-SHA256 of the body with the secret returned here."""
    return ws.add_webhook(body.url, project=body.project, secret=body.secret,
                          events=list(body.events) if body.events else None)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
def delete_webhook(webhook_id: str, ws: WorkspaceDep) -> Response:
    ws.delete_webhook(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
