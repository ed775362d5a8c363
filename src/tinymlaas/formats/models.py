"""Model files: detect the format, refuse unsafe ones, validate, describe inputs and outputs.

Safe formats: ONNX, ``torch.export`` archives (``.pt2``) and TorchScript. Pickled models
(``.pkl``, a plain ``torch.save`` of a module) can run arbitrary code when loaded and are
refused.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import onnx

from tinymlaas.domain import ArtifactKind, TensorSpec
from tinymlaas.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsafeInputError,
    UnsupportedModelError,
)

__all__ = ["ModelInfo", "detect_model_kind", "external_data_locations", "inspect_model",
           "load_onnx_checked", "strip_node_metadata"]

SAFE_FORMATS = "ONNX (.onnx), a torch.export archive (.pt2) or TorchScript (torch.jit.save)"
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".dill", ".sav"}


@dataclass
class ModelInfo:
    kind: ArtifactKind
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    parameters: int = 0


def _refuse_pickle(path: Path, why: str) -> UnsafeInputError:
    return UnsafeInputError(
        f"{path.name} is {why}; pickled models can run code when loaded and are refused. "
        f"Save the model as {SAFE_FORMATS}.", {"safe_formats": SAFE_FORMATS})


def detect_model_kind(path: Path) -> ArtifactKind:
    """The model format of ``path`` from its suffix and content."""
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise _refuse_pickle(path, "a pickle file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80":
        raise _refuse_pickle(path, "a pickle file")
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [PurePosixPath(n) for n in archive.namelist()]
        except zipfile.BadZipFile:
            raise InvalidInputError(f"{path.name} starts like a zip archive but is not one "
                                    f"(truncated?); use {SAFE_FORMATS}") from None
        parts = {p for n in names for p in n.parts}
        bases = {n.name for n in names}
        if suffix == ".pt2" or ("models" in parts and "archive_format" in bases):
            return ArtifactKind.torch_exported
        if "code" in parts and "constants.pkl" in bases:
            return ArtifactKind.torchscript
        if "data.pkl" in bases:
            raise _refuse_pickle(path, "a torch.save pickle (not TorchScript or torch.export)")
        raise InvalidInputError(f"{path.name} is a zip archive but not a model; use {SAFE_FORMATS}")
    if suffix == ".onnx" or suffix == "":
        return ArtifactKind.onnx
    raise InvalidInputError(f"{path.name}: unknown model format; use {SAFE_FORMATS}")


def _external_entries(model: onnx.ModelProto) -> Iterator[tuple[str, PurePosixPath,
                                                                dict[str, str]]]:
    """The tensor name, location (relative to the model's folder) and external-data entries
    of each tensor stored outside the model; a location outside the folder is refused."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        rel = PurePosixPath(location.replace("\\", "/"))
        if not location or rel.is_absolute() or ".." in rel.parts or ":" in location:
            raise UnsafeInputError(
                f"tensor {tensor.name!r} points at external data {location!r} outside the "
                "model's folder", {"location": location[:300]})
        yield tensor.name, rel, entries


def _check_extent(tensor: str, entries: dict[str, str], size: int) -> None:
    """The tensor's bytes (``offset``, ``length``) lie inside its file of ``size`` bytes."""
    location = entries.get("location", "")
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else size - offset
    except ValueError:
        raise InvalidInputError(f"external data of tensor {tensor!r} in {location!r} has an "
                                "offset or length that is not a whole number") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise InvalidInputError(
            f"external data of tensor {tensor!r} claims bytes {offset} to {offset + length} "
            f"of {location!r}, which has {size} bytes",
            {"location": location, "offset": offset, "length": length, "size": size})


def _check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    root = folder.resolve()
    for name, rel, entries in _external_entries(model):
        location = entries["location"]
        target = folder.joinpath(*rel.parts)
        if target.is_symlink() or not target.resolve().is_relative_to(root):
            raise UnsafeInputError(
                f"external data {location!r} of tensor {name!r} is a link or escapes "
                "the model's folder")
        if not target.is_file():
            raise InvalidInputError(f"external data file {location!r} of tensor "
                                    f"{name!r} is missing next to the model")
        _check_extent(name, entries, target.stat().st_size)


def external_data_locations(path: Path) -> set[str]:
    """The external-data files an ONNX model references, relative to its folder (each
    checked to stay inside it); empty for a self-contained model.

    Raises:
        UnsafeInputError: a location outside the model's folder.
        UnsupportedModelError: not a valid ONNX model.
    """
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:
        raise UnsupportedModelError(f"{path.name} is not a valid ONNX model: "
                                    f"{_first_line(exc)}") from exc
    return {rel.as_posix() for _, rel, _ in _external_entries(model)}


def load_onnx_checked(path: Path, max_bytes: int) -> onnx.ModelProto:
    """Load an ONNX model with its external data after every safety check.

    Raises:
        PayloadTooLargeError: the file (with its external data) is over ``max_bytes``.
        UnsafeInputError: external data outside the model's folder.
        UnsupportedModelError: not a valid ONNX model.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLargeError(f"{path.name} is {size} bytes; the limit is {max_bytes}")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:
        raise UnsupportedModelError(f"{path.name} is not a valid ONNX model: "
                                    f"{_first_line(exc)}") from exc
    _check_external_data(model, path.parent)
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
        onnx.external_data_helper.load_external_data_for_model(model, os.fspath(path.parent))
    except Exception as exc:
        raise UnsupportedModelError(f"{path.name} failed the ONNX checker: "
                                    f"{_first_line(exc)}") from exc
    if model.ByteSize() > max_bytes:
        raise PayloadTooLargeError(f"{path.name} with its external data is over {max_bytes} bytes")
    if not model.graph.output or not [i for i in model.graph.input
                                      if i.name not in {t.name for t in model.graph.initializer}]:
        raise UnsupportedModelError(f"{path.name} has no graph inputs or outputs")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def onnx_tensor_specs(values: list[onnx.ValueInfoProto]) -> list[TensorSpec]:
    specs = []
    for value in values:
        ttype = value.type.tensor_type
        shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
                                  for d in ttype.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name \
            if ttype.elem_type else "unknown"
        specs.append(TensorSpec(name=value.name, shape=shape, dtype=dtype))
    return specs


def inspect_model(path: Path, kind: ArtifactKind, max_bytes: int,
                  input_shape: list[int] | None = None, *, memory_mb: int = 8192,
                  timeout_s: float = 120) -> ModelInfo:
    """Validate a model file of ``kind``, run it once on example inputs built from its
    input spec (:mod:`tinymlaas.formats.examples`) and describe it.

    ``input_shape`` (without the batch dimension) is needed for TorchScript, which does not
    record shapes. An ONNX model runs in a child process within ``memory_mb`` of memory and
    ``timeout_s`` of CPU time.
    """
    if kind is ArtifactKind.onnx:
        from tinymlaas.evaluation.static import graph_stats
        from tinymlaas.formats.examples import check_onnx_runs

        model = load_onnx_checked(path, max_bytes)
        init = {i.name for i in model.graph.initializer}
        inputs = onnx_tensor_specs([i for i in model.graph.input if i.name not in init])
        check_onnx_runs(path, model, inputs, memory_mb=memory_mb, timeout_s=timeout_s)
        return ModelInfo(kind=kind, inputs=inputs,
                         outputs=onnx_tensor_specs(list(model.graph.output)),
                         parameters=graph_stats(model).parameters)
    from tinymlaas.formats.torch_models import inspect_torch

    return inspect_torch(path, kind, input_shape)


def strip_node_metadata(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node notes (``metadata_props``: source stack traces, module
    names) from ``graph`` and its subgraphs: on a small model they outweigh the weights,
    and every size ratio against the export would be inflated."""
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                strip_node_metadata(attribute.g)
            for sub in attribute.graphs:
                strip_node_metadata(sub)
