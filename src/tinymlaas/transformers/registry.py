"""Transformer registry: names map to ``module:Class`` and load on first use.

Built-ins are listed below; third-party transformers come in through the entry-point group
``tinymlaas.transformers`` (``name = "package.module:Class"``). A name registered twice is
an error.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.transformers.base import Transformer

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "get_transformer", "known_names",
           "list_transformers", "params_schema", "reset", "validate_params"]

ENTRY_POINT_GROUP = "tinymlaas.transformers"

BUILTIN: dict[str, str] = {
    "export-onnx": "tinymlaas.transformers.torch.export_onnx:ExportOnnx",
    "fuse": "tinymlaas.transformers.onnx.fuse:Fuse",
    "quantize-dynamic": "tinymlaas.transformers.onnx.quantize:QuantizeDynamic",
    "quantize-static": "tinymlaas.transformers.onnx.quantize:QuantizeStatic",
    "auto-int8": "tinymlaas.transformers.onnx.auto_int8:AutoInt8",
    "fp16": "tinymlaas.transformers.onnx.fp16:Float16",
    "external": "tinymlaas.transformers.external:External",
    "compile-c": "tinymlaas.transformers.compile_c:CompileC",
    "prune-structured": "tinymlaas.transformers.torch.prune_structured:PruneStructured",
    "prune-magnitude": "tinymlaas.transformers.torch.prune_magnitude:PruneMagnitude",
    "sparsify": "tinymlaas.transformers.torch.sparsify:Sparsify",
    "factorize-lowrank": "tinymlaas.transformers.torch.factorize_lowrank:FactorizeLowRank",
    "distill": "tinymlaas.transformers.torch.distill:Distill",
    "qat": "tinymlaas.transformers.torch.qat:Qat",
    "package-c": "tinymlaas.transformers.package.package_c:PackageC",
    "package-python": "tinymlaas.transformers.package.package_python:PackagePython",
    "package-docker": "tinymlaas.transformers.package.package_docker:PackageDocker",
    "sign-image": "tinymlaas.transformers.package.sign_image:SignImage",
}


@cache
def _table() -> dict[str, str]:
    table = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in table:
            raise ConflictError(f"transformer {ep.name!r} from {ep.value} is already "
                                f"registered by {table[ep.name]}; rename one of them")
        table[ep.name] = ep.value
    return table


def reset() -> None:
    """Forget the scanned table and loaded transformers (after ``sys.path`` changes)."""
    _table.cache_clear()
    get_transformer.cache_clear()


def known_names() -> list[str]:
    return sorted(_table())


@cache
def get_transformer(name: str) -> Transformer:
    """The transformer registered as ``name`` (imported on first use)."""
    table = _table()
    if name not in table:
        raise NotFoundError(f"unknown transformer {name!r}; known: {', '.join(known_names())}",
                            {"known": known_names()})
    module_name, _, attr = table[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if getattr(cls, "name", None) != name:
        raise ConflictError(f"{table[name]} declares name {getattr(cls, 'name', None)!r}, "
                            f"registered as {name!r}")
    return cls()


def list_transformers() -> list[Transformer]:
    return [get_transformer(name) for name in known_names()]


def validate_params(name: str, params: dict[str, Any], where: str = "") -> BaseModel:
    """Typed params for transformer ``name``; errors name every bad field."""
    transformer = get_transformer(name)
    try:
        return transformer.Params.model_validate(params or {})
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                    for e in exc.errors()]
        raise InvalidInputError(f"{where}{name}: invalid params: {'; '.join(problems)}",
                                {"transformer": name, "errors": problems}) from None


def params_schema(name: str) -> dict[str, Any]:
    return get_transformer(name).Params.model_json_schema()
