"""Sites: where a project's steps run on the customer's machines. Users create, list and
delete them; a site's workers authenticate with the site's token (``Authorization:
Bearer tmlsite_...``) on the site endpoints only: the heartbeat and upload URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tinymlaas.api.common import AUTH_ERRORS, errors
from tinymlaas.api.deps import StudioDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.site_schemas import (
    BlobUrl,
    BlobUrlRequest,
    Heartbeat,
    HeartbeatAnswer,
    SiteCreate,
    SiteCreated,
)
from tinymlaas.domain.sites import Site
from tinymlaas.errors import AuthenticationError
from tinymlaas.service.site_jobs import SiteJobs
from tinymlaas.service.sites import Sites, SitesView

__all__ = ["router"]

router = APIRouter(prefix="/sites", tags=["sites"], responses=AUTH_ERRORS)
_site_bearer = HTTPBearer(auto_error=False, scheme_name="SiteToken",
                          description="A site's token (`tmlsite_...`), for its workers.")


async def get_sites(ws: WorkspaceDep, studio: StudioDep) -> SitesView:
    return SitesView(Sites(studio.services), ws)


SitesDep = Annotated[SitesView, Depends(get_sites)]


async def get_site_of_token(
        name: str, studio: StudioDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_site_bearer)],
) -> Site:
    if credentials is None:
        raise AuthenticationError("send 'Authorization: Bearer <site token>'")
    return await run_in_threadpool(Sites(studio.services).authenticate,
                                   credentials.credentials, name)


SiteTokenDep = Annotated[Site, Depends(get_site_of_token)]


@router.post("", response_model=SiteCreated, status_code=status.HTTP_201_CREATED)
def create_site(body: SiteCreate, sites: SitesDep) -> object:
    """Create a site and get its token, shown this once: its workers authenticate with it."""
    site, token = sites.create(body.name, body.project)
    return SiteCreated(**site.model_dump(), token=token)


@router.get("", response_model=list[Site], responses=PAGED)
def list_sites(sites: SitesDep, paging: PagingDep,
               project: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """The sites of the user's projects (or one), oldest first, with their workers."""
    return paging.send(sites.page(paging.limit, paging.after, project))


@router.get("/{name}", response_model=Site)
def get_site(name: str, sites: SitesDep,
             project: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """A site (by name or id) with its workers, newest heartbeat first."""
    return sites.get(name, project)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_site(name: str, sites: SitesDep,
                project: Annotated[str | None, Query(max_length=100)] = None) -> Response:
    """Delete a site and forget its workers; its token stops working at once."""
    sites.delete(name, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/heartbeat", response_model=HeartbeatAnswer,
             responses=errors(400, 401, 404, 422, 500))
def heartbeat(name: str, body: Heartbeat, site: SiteTokenDep, studio: StudioDep) -> object:
    """A worker of the site (site token) says it is alive and which steps it runs; the
    answer lists the site's queued dataset descriptions (``describe_jobs``), which a worker
    takes even while its step slots are busy."""
    worker = Sites(studio.services).heartbeat(site, body.worker_id, body.hostname,
                                              body.running_steps)
    return HeartbeatAnswer(**worker.model_dump(),
                           describe_jobs=SiteJobs(studio.services).describe_jobs(site))


@router.post("/{name}/blob-urls", response_model=BlobUrl,
             responses=errors(400, 401, 404, 409, 422, 500))
def blob_upload_url(name: str, body: BlobUrlRequest, site: SiteTokenDep, studio: StudioDep,
                    request: Request) -> object:
    """A signed URL a worker of the site (site token) uploads the output of the job's
    attempt it holds to: ``PUT`` the bytes whose sha256 is ``sha256``. 404: the job is not
    the site's; 409: the attempt is not this worker's (ended, cancelled, taken over), or
    it already named another output (one per attempt)."""
    base = str(request.base_url).rstrip("/")
    url = SiteJobs(studio.services).upload_url(site, body.job_id, body.worker_id,
                                               body.attempt, body.sha256, body.ttl_s, base)
    return BlobUrl(url=url, expires_at=datetime.now(UTC) + timedelta(seconds=body.ttl_s))
