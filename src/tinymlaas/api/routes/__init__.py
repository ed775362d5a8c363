"""One router per resource, gathered into ``api_router`` (mounted at ``/api/v1``)."""

from fastapi import APIRouter

from tinymlaas.api.routes import (
    auth,
    datasets,
    devices,
    health,
    models,
    projects,
    runs,
    searches,
    templates,
    transformers,
    users,
    webhooks,
)

__all__ = ["api_router"]

api_router = APIRouter()
for module in (runs, health, auth, users, projects, models, datasets, devices, transformers,
               templates, searches, webhooks):
    api_router.include_router(module.router)
