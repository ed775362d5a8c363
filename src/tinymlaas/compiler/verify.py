"""Verification of the generated code: an exact gate, and informational agreement figures.

The gate (:func:`verify_outputs`, :func:`check_fidelity`) compares the host build of the
generated C with the exact reference (:mod:`tinymlaas.compiler.reference`), which computes
what the C must compute, bit for bit, on any CPU. A quantized output passes when at least
:data:`MIN_EXACT_FRACTION` of its elements are exact and none is more than
:data:`MAX_LSB_DIFF` quantization step off (the step is 1 for integer outputs and the
output scale for a float output behind ``DequantizeLinear``); a float output passes within
:data:`MAX_FLOAT_REL_ERR` of the reference's largest magnitude.

ONNX Runtime (:func:`reference_outputs`, :func:`agreement`) is informational only: its
optimized int8 kernels differ between CPUs (with and without VNNI), so its int8 results
cannot judge exactness. ``agreement`` gives ``max_rel_err``, the largest absolute
difference relative to the reference's largest magnitude, and ``fraction_within_1lsb``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel

from tinymlaas.compiler.loader import load_model
from tinymlaas.errors import StepFailedError

__all__ = [
    "MAX_FLOAT_REL_ERR",
    "MAX_LSB_DIFF",
    "MIN_EXACT_FRACTION",
    "Agreement",
    "Fidelity",
    "agreement",
    "check_fidelity",
    "fidelity",
    "output_lsb",
    "reference_outputs",
    "verify_outputs",
]

#: Share of a quantized output's elements that must equal the exact reference.
MIN_EXACT_FRACTION = 0.99
#: Largest difference from the exact reference, in quantization steps, of any element.
MAX_LSB_DIFF = 1
#: Largest difference of a float output, relative to the reference's largest magnitude.
MAX_FLOAT_REL_ERR = 1e-4


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
    model: str | Path | onnx.ModelProto, *inputs: np.ndarray, optimize: bool = True
) -> list[np.ndarray]:
    """Outputs of ONNX Runtime (CPU, one thread) for the given inputs.

    Args:
        model: The model.
        *inputs: One array per model input.
        optimize: With ONNX Runtime's graph optimizations, which run QDQ patterns on its
            int8 kernels (results differ between CPUs). ``False`` runs the graph as ONNX
            specifies it: ``DequantizeLinear``, the float operator, ``QuantizeLinear``
            (rounding half to even in float; the same on every CPU up to float rounding).
    """
    import onnxruntime as ort

    proto = load_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    return list(session.run(None, dict(zip(names, inputs, strict=True))))


class Fidelity(BaseModel):
    """One output of the generated code against the exact reference."""

    output: str
    elements: int
    lsb: float | None = None
    exact_fraction: float
    within_1lsb: float | None = None
    max_lsb_diff: float | None = None
    max_rel_err: float
    passed: bool

    def describe(self) -> str:
        """A one-line account, e.g. for a log or an error message."""
        text = f"output {self.output!r}: {100 * self.exact_fraction:.2f}% of " \
               f"{self.elements} elements exact"
        if self.max_lsb_diff is not None:
            return f"{text}, max {self.max_lsb_diff:g} LSB off (LSB {self.lsb:g})"
        return f"{text}, max relative error {self.max_rel_err:.3g}"


def fidelity(got: np.ndarray, ref: np.ndarray, *, output: str = "output",
             lsb: float | None = None) -> Fidelity:
    """Compare one output of the generated code with the exact reference.

    Args:
        got: Output of the generated code.
        ref: The exact reference's output (same shape).
        output: The output's name, for messages.
        lsb: The quantization step of a float output behind ``DequantizeLinear``; integer
            outputs use 1. Without a step the output is judged as float.

    Returns:
        The figures, and whether they meet the bar.
    """
    figures = agreement(got, ref, lsb=lsb)
    step = figures.lsb
    max_lsb = None
    if step is not None:
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
        steps = np.rint(diff / step) if diff.size else diff
        max_lsb = float(steps.max()) if steps.size else 0.0
        if not np.isfinite(max_lsb):
            max_lsb = float("inf")
        passed = figures.exact_fraction >= MIN_EXACT_FRACTION and max_lsb <= MAX_LSB_DIFF
    else:
        passed = bool(figures.max_rel_err <= MAX_FLOAT_REL_ERR)
    return Fidelity(output=output, elements=figures.elements, lsb=step,
                    exact_fraction=figures.exact_fraction,
                    within_1lsb=figures.fraction_within_1lsb, max_lsb_diff=max_lsb,
                    max_rel_err=figures.max_rel_err, passed=passed)


def check_fidelity(checks: list[Fidelity]) -> None:
    """Raise unless every output meets the bar.

    Raises:
        StepFailedError: Names each failing output with its exact fraction and largest
            difference; ``details["outputs"]`` holds the figures.
    """
    failed = [c for c in checks if not c.passed]
    if not failed:
        return
    bar = (f"the bar is >= {100 * MIN_EXACT_FRACTION:g}% exact and every element within "
           f"{MAX_LSB_DIFF} LSB for quantized outputs, relative error <= "
           f"{MAX_FLOAT_REL_ERR:g} for float outputs")
    raise StepFailedError(
        "The generated C does not compute what the model specifies: "
        + "; ".join(c.describe() for c in failed)
        + f" against the exact integer reference ({bar}).",
        {"outputs": [c.model_dump() for c in failed]},
    )


def verify_outputs(
    got: np.ndarray | tuple[np.ndarray, ...] | list[np.ndarray],
    ref: list[np.ndarray],
    model: onnx.ModelProto,
) -> list[Fidelity]:
    """:func:`fidelity` of every output of a model (as :meth:`HostModel.run` returns them).

    Args:
        got: Outputs of the generated code (one array or a tuple).
        ref: The exact reference's outputs (:meth:`Reference.run`).
        model: The ONNX model (output names and the steps of dequantized outputs).
    """
    outputs = list(got) if isinstance(got, tuple | list) else [got]
    if len(outputs) != len(ref):
        raise ValueError(f"{len(outputs)} outputs, the reference has {len(ref)}")
    checks = []
    for index, (out, expected) in enumerate(zip(outputs, ref, strict=True)):
        name = model.graph.output[index].name
        out, expected = np.asarray(out), np.asarray(expected)
        lsb = None if expected.dtype.kind in "iu" else output_lsb(model, index)
        checks.append(fidelity(out, expected.reshape(out.shape), output=name, lsb=lsb))
    return checks
