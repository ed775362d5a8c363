"""Sites: where a project's steps can run on the customer's own machines.

:class:`Sites` holds the use cases on one database; :class:`SitesView` is one user's view
on their :class:`~tinymlaas.service.workspace.Workspace` (another project's site is "not
found"; creating and deleting need the owner or editor role). A site's token is shown
once when the site is made and kept as its sha256 only. It authenticates a site's workers
on the site endpoints (a heartbeat, and the signed artifact URLs of :mod:`.blobs`), never
on the user API.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from typing import Any

from tinymlaas.domain.entities import NAME_PATTERN
from tinymlaas.domain.sites import Site, SiteWorker
from tinymlaas.errors import AuthenticationError, InvalidInputError, NotFoundError
from tinymlaas.service.services import Services
from tinymlaas.store.metadata import new_id
from tinymlaas.store.paging import Key, Page
from tinymlaas.store.sites import SiteStore

__all__ = ["SITE_TOKEN_PREFIX", "Sites", "SitesView"]

SITE_TOKEN_PREFIX = "tmlsite_"
#: What a worker may call itself: letters, digits and ``._:-`` (a host name and a pid fit).
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
MAX_RUNNING_STEPS = 256
_NAME = re.compile(NAME_PATTERN)
_WORKER_ID = re.compile(WORKER_ID_PATTERN)
_STEP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sites:
    """The sites' use cases on the services' database."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = SiteStore(services.meta)

    def create(self, project: str, name: str) -> tuple[Site, str]:
        """A new site of ``project`` and its token (returned once, never stored)."""
        if not _NAME.match(name):
            raise InvalidInputError(f"site name {name!r} must match {NAME_PATTERN}",
                                    {"field": "name"})
        token = SITE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        site = self.store.add_site(Site(id=new_id("site"), project=project, name=name),
                                   _hash(token))
        return site, token

    def get(self, ref: str, projects: Collection[str] | None = None) -> Site:
        return self.store.get_site(ref, projects)

    def list(self, projects: Collection[str]) -> list[Site]:
        return self.store.list_sites(projects)

    def page(self, projects: Collection[str], limit: int,
             after: Key | None = None) -> Page[Site]:
        return self.store.page_sites(projects, limit, after)

    def delete(self, site: Site) -> None:
        """Remove the site and its workers; its token stops working at once."""
        self.store.delete_site(site.id)

    def authenticate(self, token: str, ref: str) -> Site:
        """The site holding ``token``; it must be the one ``ref`` (name or id) names.

        Raises:
            AuthenticationError: not a site token, or the site was deleted.
            NotFoundError: the token belongs to another site.
        """
        site = self.store.site_by_token(_hash(token)) \
            if token.startswith(SITE_TOKEN_PREFIX) else None
        if site is None:
            raise AuthenticationError("unknown site token; create the site again to get one")
        if ref not in (site.name, site.id):
            raise NotFoundError(f"site {ref!r} not found", {"kind": "site", "ref": ref})
        return site

    def heartbeat(self, site: Site, worker_id: str, hostname: str,
                  running_steps: list[str] | None = None) -> SiteWorker:
        """Record that ``worker_id`` of ``site`` is alive and what it runs."""
        steps = list(running_steps or [])
        if not _WORKER_ID.match(worker_id):
            raise InvalidInputError(f"worker id {worker_id!r} must match {WORKER_ID_PATTERN}",
                                    {"field": "worker_id"})
        if not hostname or len(hostname) > 255 or not hostname.isprintable():
            raise InvalidInputError("hostname has 1 to 255 printable characters",
                                    {"field": "hostname"})
        if len(steps) > MAX_RUNNING_STEPS or not all(_STEP.match(s) for s in steps):
            raise InvalidInputError(f"running_steps are at most {MAX_RUNNING_STEPS} step ids",
                                    {"field": "running_steps"})
        return self.store.heartbeat(site.id, worker_id, hostname, steps)


class SitesView:
    """One user's view of the sites: their projects only; changes need owner or editor."""

    def __init__(self, sites: Sites, ws: Any) -> None:
        self.sites = sites
        self.ws = ws

    def create(self, name: str, project: str | None = None) -> tuple[Site, str]:
        return self.sites.create(self.ws.project_id(project, write=True), name)

    def get(self, ref: str, project: str | None = None) -> Site:
        scope = {self.ws.project_id(project)} if project else self.ws.projects
        return self.sites.get(ref, scope)

    def list(self, project: str | None = None) -> list[Site]:
        return self.sites.list({self.ws.project_id(project)} if project else self.ws.projects)

    def page(self, limit: int, after: Key | None = None,
             project: str | None = None) -> Page[Site]:
        """Oldest first."""
        scope = {self.ws.project_id(project)} if project else self.ws.projects
        return self.sites.page(scope, limit, after)

    def delete(self, ref: str, project: str | None = None) -> Site:
        site = self.get(ref, project)
        self.ws.project_id(site.project, write=True)
        self.sites.delete(site)
        return site
