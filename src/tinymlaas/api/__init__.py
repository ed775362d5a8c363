"""The HTTP API of the Studio service (FastAPI). Import :func:`create_app` from
:mod:`tinymlaas.api.app`; request and response bodies live in :mod:`tinymlaas.api.schemas`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tinymlaas.api.app import create_app

        return create_app
    raise AttributeError(name)
