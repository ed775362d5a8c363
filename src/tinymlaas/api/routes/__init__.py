"""One router per resource, gathered into ``api_router`` (mounted at ``/api/v1``)."""

from fastapi import APIRouter

from tinymlaas.api.routes import (
    auth,
    blobs,
    datasets,
    devices,
    fleet,
    health,
    models,
    projects,
    runs,
    searches,
    site_jobs,
    sites,
    templates,
    transformers,
    users,
    webhooks,
)

__all__ = ["api_router"]

api_router = APIRouter()
# Each resource's routes become api_router's own rather than an included router: on every
# request FastAPI walks all the routes of every included router to find the match, a cost
# that grows with nesting. The routes already carry their router's prefix, tags and
# dependencies. Requests are matched in order, so the most requested resources (runs,
# then searches) come first; no two resources share a path.
for module in (runs, searches, models, datasets, devices, projects, health, auth, users,
               transformers, templates, webhooks, fleet, sites, site_jobs, blobs):
    api_router.routes.extend(module.router.routes)
