"""Transformers: named, versioned steps ``artifact in -> artifact out`` with typed params."""

from tinymlaas.transformers.base import StepContext, StepOutput, Transformer
from tinymlaas.transformers.registry import get_transformer, list_transformers, validate_params

__all__ = [
    "StepContext",
    "StepOutput",
    "Transformer",
    "get_transformer",
    "list_transformers",
    "validate_params",
]
