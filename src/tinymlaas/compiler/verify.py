"""Agreement between the generated code and a reference runtime.

Two figures describe it: ``max_rel_err``, the largest absolute difference relative to the
reference's largest magnitude (float models), and ``fraction_within_1lsb``, the share of
elements within one quantization step (int8 models; the step is 1 for integer outputs and
the output scale for a float output behind ``DequantizeLinear``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel

from tinymlaas.compiler.loader import load_model

__all__ = ["Agreement", "agreement", "output_lsb", "reference_outputs"]


class Agreement(BaseModel):
    """How closely one output matches its reference."""

    elements: int
    max_abs_err: float
    max_rel_err: float
    lsb: float | None = None
    fraction_within_1lsb: float | None = None
    exact_fraction: float


def agreement(got: np.ndarray, ref: np.ndarray, *, lsb: float | None = None) -> Agreement:
    """Compare an output with its reference.

    Args:
        got: Output of the generated code.
        ref: Reference output (same shape).
        lsb: One quantization step; defaults to 1 for integer outputs.

    Returns:
        The agreement figures.
    """
    got = np.asarray(got)
    ref = np.asarray(ref)
    if got.shape != ref.shape:
        raise ValueError(f"shape {got.shape} differs from the reference {ref.shape}")
    if lsb is None and ref.dtype.kind in "iu":
        lsb = 1.0
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref.astype(np.float64)))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    within = None
    if lsb is not None and diff.size:
        within = float(np.mean(diff <= lsb * (1 + 1e-3)))
    return Agreement(
        elements=int(ref.size),
        max_abs_err=max_abs,
        max_rel_err=max_abs / scale if scale > 0 else max_abs,
        lsb=lsb,
        fraction_within_1lsb=within,
        exact_fraction=float(np.mean(diff == 0)) if diff.size else 1.0,
    )


def output_lsb(model: onnx.ModelProto, index: int = 0) -> float | None:
    """The quantization step of a float output produced by ``DequantizeLinear``, if any."""
    name = model.graph.output[index].name
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.output and node.output[0] == name and node.op_type == "DequantizeLinear":
            scale = inits.get(node.input[1])
            if scale is not None:
                array = onnx.numpy_helper.to_array(scale)
                if array.size == 1:
                    return float(array.ravel()[0])
    return None


def reference_outputs(
    model: str | Path | onnx.ModelProto, *inputs: np.ndarray
) -> list[np.ndarray]:
    """Outputs of ONNX Runtime (CPU, one thread) for the given inputs."""
    import onnxruntime as ort

    proto = load_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    return list(session.run(None, dict(zip(names, inputs, strict=True))))
