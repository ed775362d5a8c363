"""Liveness: no token needed."""

from fastapi import APIRouter

from tinymlaas import __version__
from tinymlaas.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """The server is up."""
    return Health(version=__version__)
