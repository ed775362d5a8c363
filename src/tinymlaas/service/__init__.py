"""Use cases: what a user can do, independent of how they ask (CLI, API, web)."""

from tinymlaas.service.services import ComparisonRow, Services

__all__ = ["ComparisonRow", "Services"]
