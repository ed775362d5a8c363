"""The page routers, gathered into ``web_router`` (mounted at the site root)."""

from fastapi import APIRouter

from tinymlaas.web.routes import (
    assets,
    auth,
    compare,
    delete,
    fleet,
    projects,
    runs,
    searches,
    sites,
    vendor,
)

__all__ = ["web_router"]

web_router = APIRouter(include_in_schema=False)
for module in (vendor, auth, projects, runs, searches, compare, assets, fleet, sites, delete):
    web_router.include_router(module.router)
