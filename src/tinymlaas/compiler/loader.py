"""Loading and preparing ONNX models for compilation.

Preparation pins symbolic batch dimensions to 1, simplifies float graphs with ``onnxsim``
(constant folding, BatchNorm folding) and infers a static shape for every value.
Quantized (QDQ) graphs are not simplified: folding would turn int8 weights back into
float constants.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from tinymlaas.errors import InvalidInputError, UnsupportedModelError
from tinymlaas.evaluation.static import static_shapes

__all__ = ["load_model", "prepare"]

log = logging.getLogger(__name__)


def load_model(source: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Read an ONNX model (with external data from its own folder) or pass a proto through."""
    if isinstance(source, onnx.ModelProto):
        return source
    path = Path(source)
    if not path.is_file():
        raise InvalidInputError(f"No ONNX model at {path}.", {"path": str(path)})
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise InvalidInputError(f"{path.name} is not a readable ONNX model: {exc}.") from exc


def _pin_batch(model: onnx.ModelProto, batch: int) -> None:
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if position != 0:
                raise UnsupportedModelError(
                    f"Input {value.name!r} has a symbolic dimension at position {position}; "
                    "only the batch dimension may be symbolic. Export with fixed shapes.",
                    {"input": value.name, "dimension": position},
                )
            dim.Clear()
            dim.dim_value = batch
    for value in model.graph.output:
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if position == 0 and not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch


def _is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def prepare(
    model: onnx.ModelProto, *, simplify: bool = True, batch: int = 1
) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """A compile-ready copy of ``model`` and the static shape of every value.

    Args:
        model: The model; it is not modified.
        simplify: Run ``onnxsim`` on float graphs.
        batch: The value for a symbolic batch dimension.

    Returns:
        The prepared model and a map from value name to shape.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _pin_batch(model, batch)
    if simplify and not _is_quantized(model):
        try:
            import onnxsim

            simplified, ok = onnxsim.simplify(model)
            if ok:
                model = simplified
        except Exception as exc:
            log.info("onnxsim could not simplify the model (%s); compiling it as it is", exc)
    try:
        shapes = static_shapes(model, batch=batch)
    except Exception as exc:
        raise UnsupportedModelError(f"Shape inference failed: {exc}.") from exc
    return model, shapes
