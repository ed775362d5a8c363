"""Ready-made pipelines (``tinymlaas run`` takes their names or paths; the demo runs them)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["DEFAULT_INT8", "default_template", "template_names", "template_path"]

#: The platform's default int8: ``auto-int8`` picks the recipe by graph; a PyTorch model is
#: exported to ONNX first.
DEFAULT_INT8 = "auto-int8"
_DEFAULT_INT8_PYTORCH = "export-auto-int8"


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files(__name__).iterdir()
                  if p.name.endswith(".yaml"))


def template_path(name: str) -> Path:
    return Path(str(files(__name__).joinpath(f"{name}.yaml")))


def default_template(model_kind: str) -> str:
    """The template a new run of a model of ``model_kind`` (an ``ArtifactKind`` value)
    starts from: the default int8, with the export first for a PyTorch model."""
    return DEFAULT_INT8 if model_kind == "onnx" else _DEFAULT_INT8_PYTORCH
