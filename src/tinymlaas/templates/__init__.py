"""Ready-made pipelines (``tinymlaas run`` takes their paths; the demo runs them)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["template_names", "template_path"]


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files(__name__).iterdir()
                  if p.name.endswith(".yaml"))


def template_path(name: str) -> Path:
    return Path(str(files(__name__).joinpath(f"{name}.yaml")))
