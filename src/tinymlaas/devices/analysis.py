"""Static analysis of an ONNX model and whether it fits a device.

Everything here is computed from the graph alone: flash for the weights (int8 weights
count one byte), peak activation memory from the compiler's liveness-based arena planner,
MACs, which runtimes support each operator, and a fit verdict with margins and reasons.
Latency is an *estimate*: ``MACs / (clock_hz * macs_per_cycle)`` with the device
profile's documented MACs-per-cycle figure.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from math import prod
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from pydantic import BaseModel, Field

from tinymlaas.compiler.api import build_program
from tinymlaas.compiler.loader import load_model, prepare
from tinymlaas.compiler.planner import Interval, outside_bytes, plan_arena
from tinymlaas.compiler.profile import (
    LayerProfile,
    add_instructions,
    op_types,
    profile_program,
)
from tinymlaas.devices.catalog import get_device
from tinymlaas.devices.support import RUNTIMES, supported_by
from tinymlaas.domain import Device
from tinymlaas.domain.comparison import Verdict, verdict_label
from tinymlaas.domain.units import human_bytes as _size
from tinymlaas.errors import InvalidInputError, UnsupportedModelError
from tinymlaas.evaluation.static import count_macs, graph_stats

__all__ = [
    "RUNTIME_FLASH_BYTES",
    "RUNTIME_RAM_BYTES",
    "Analysis",
    "FitVerdict",
    "OperatorSupport",
    "Verdict",
    "analyze_model",
    "fit_verdict",
    "verdict_label",
]

#: Flash a runtime adds on top of the weights (code, tables): the C compiler's figure is
#: measured on Cortex-M4 firmware (kernels, startup, libm parts), TFLite Micro's is its
#: interpreter with the common reference kernels, ONNX Runtime's its minimal build.
RUNTIME_FLASH_BYTES: dict[str, int] = {
    "c": 16 * 1024,
    "tflite-micro": 100 * 1024,
    "onnxruntime": 8 * 1024 * 1024,
}
#: RAM a runtime needs besides activations and I/O (interpreter state; heap for ORT).
RUNTIME_RAM_BYTES: dict[str, int] = {
    "c": 0,
    "tflite-micro": 4 * 1024,
    "onnxruntime": 32 * 1024 * 1024,
}
LATENCY_BASIS = "estimate: MACs / (clock_hz * macs_per_cycle)"


class OperatorSupport(BaseModel):
    """One operator type of the model and the runtimes that can execute it."""

    op_type: str
    domain: str = ""
    count: int
    runtimes: dict[str, bool]


class FitVerdict(BaseModel):
    """Whether the model fits a device with a given runtime, and by how much."""

    device: str
    runtime: str
    fits: bool
    flash_needed_bytes: int
    flash_available_bytes: int
    flash_margin_pct: float = Field(description="free flash after the model, % of flash")
    ram_needed_bytes: int
    ram_available_bytes: int
    ram_margin_pct: float = Field(description="free RAM after the model, % of RAM")
    latency_ms_estimate: float
    latency_basis: str = LATENCY_BASIS
    reasons: list[str] = Field(default_factory=list)
    verdict: Verdict = Field(default="fits", description="'fits'; 'does not fit' (memory, "
                             "or a runtime the device lacks); 'unsupported ops' (the runtime "
                             "cannot run the model at all, whatever the memory)")
    unsupported_ops: list[str] = Field(default_factory=list, description="operator types "
                                       "the runtime lacks")
    weight_bytes: int | None = Field(default=None, description="constants in flash")
    activation_bytes: int | None = Field(default=None, description="peak activation arena")
    io_bytes: int | None = Field(default=None, description="input and output buffers")
    memory_source: str | None = Field(default=None, description="'compiler' (exact plan) or "
                                      "'graph' (estimate)")

    @property
    def label(self) -> str:
        """The verdict as people read it: ``fits``, ``does not fit`` or ``unsupported ops:
        Cast, ConvInteger``."""
        return verdict_label(self.model_dump())


class Analysis(BaseModel):
    """Static facts about a model, optionally with a fit verdict for one device."""

    model: str
    parameters: int
    weight_bytes: int = Field(description="constants in flash: weights, biases, tables")
    activation_bytes: int = Field(description="peak activation arena from the planner")
    io_bytes: int = Field(description="input and output buffers")
    macs: int
    quantized: bool
    memory_source: str = Field(description="'compiler' (exact plan) or 'graph' (estimate)")
    operators: list[OperatorSupport]
    unsupported: dict[str, list[str]] = Field(description="runtime -> unsupported op types")
    fit: FitVerdict | None = None
    layers: list[LayerProfile] | None = Field(default=None, description="per-kernel "
                                               "profile (asked for, and compiler memory only)")

    @property
    def ram_bytes(self) -> int:
        """Activations plus I/O: RAM the model itself needs."""
        return self.activation_bytes + self.io_bytes

    def to_table_rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` rows for a two-column table."""
        rows = [
            ("model", self.model),
            ("parameters", f"{self.parameters:,}"),
            ("weights (flash)", _size(self.weight_bytes)),
            ("activations (RAM, peak)", _size(self.activation_bytes)),
            ("input + output", _size(self.io_bytes)),
            ("MACs", f"{self.macs:,}"),
            ("quantized", "yes" if self.quantized else "no"),
        ]
        for runtime in RUNTIMES:
            missing = self.unsupported.get(runtime, [])
            rows.append((f"ops on {runtime}", "all supported" if not missing
                         else "missing " + ", ".join(missing)))
        if self.fit:
            fit = self.fit
            rows += [
                ("device", f"{fit.device} ({fit.runtime})"),
                ("fits", "yes" if fit.fits else "no"),
                ("verdict", fit.label),
                ("flash needed / available",
                 f"{_size(fit.flash_needed_bytes)} / {_size(fit.flash_available_bytes)} "
                 f"({fit.flash_margin_pct:.1f}% free)"),
                ("RAM needed / available",
                 f"{_size(fit.ram_needed_bytes)} / {_size(fit.ram_available_bytes)} "
                 f"({fit.ram_margin_pct:.1f}% free)"),
                ("latency (estimate)", f"{fit.latency_ms_estimate:.3g} ms"),
            ]
            rows += [("reason", reason) for reason in fit.reasons]
        return rows


def _operators(model: onnx.ModelProto) -> list[OperatorSupport]:
    counts = Counter((n.op_type, n.domain) for n in model.graph.node)
    return [
        OperatorSupport(op_type=op, domain=domain, count=count,
                        runtimes={r: supported_by(r, op, domain) for r in RUNTIMES})
        for (op, domain), count in sorted(counts.items())
    ]


def _graph_memory(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[int, int]:
    """Arena estimate when the compiler cannot lower the graph: every node output is a
    buffer living from its producer to its last consumer."""
    itemsize: dict[str, int] = {}
    graph = onnx.shape_inference.infer_shapes(model)
    for value in [*graph.graph.value_info, *graph.graph.output, *graph.graph.input]:
        try:
            dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            itemsize[value.name] = np.dtype(dtype).itemsize
        except (KeyError, TypeError, ValueError):
            continue
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    last: dict[str, int] = {}
    for step, node in enumerate(model.graph.node):
        for name in node.input:
            last[name] = step
    intervals = []
    for step, node in enumerate(model.graph.node):
        for name in node.output:
            if not name or name in outputs:
                continue
            nbytes = prod(shapes.get(name, [1])) * itemsize.get(name, 4)
            intervals.append(Interval(nbytes, step, last.get(name, step)))
    io = sum(prod(shapes.get(n, [1])) * itemsize.get(n, 4) for n in [*inputs, *outputs])
    return plan_arena(intervals), io


def analyze_model(
    model: str | Path | onnx.ModelProto,
    device: Device | str | None = None,
    *,
    runtime: str = "c",
    layers: bool = False,
    instructions: bool = False,
) -> Analysis:
    """Analyse a model (float or int8 QDQ; NHWC and int8 I/O are fine; batch taken as 1).

    Args:
        model: An ``.onnx`` path or a loaded model.
        device: A device profile or catalog name for the fit verdict (optional).
        runtime: The runtime the verdict assumes: ``c``, ``tflite-micro`` or ``onnxruntime``.
        layers: Add the compiler's per-kernel profile (:mod:`tinymlaas.compiler.profile`);
            stays None when the compiler cannot lower the model.
        instructions: Also count each call's instructions on the emulated Cortex-M4
            (:func:`tinymlaas.compiler.profile.add_instructions`; needs the Arm toolchain
            and QEMU, and ``layers``).

    Returns:
        The analysis; ``fit`` is set when a device was given.
    """
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"Unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}.")
    if instructions and not layers:
        raise InvalidInputError("instruction counts are per layer: ask for the layers too")
    label = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "model")
    proto = load_model(model)
    stats = graph_stats(proto)
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv",
                                  "QLinearMatMul") for n in proto.graph.node)
    try:
        program, prepared = build_program(proto, strict=False)
        weight_bytes = program.const_bytes()
        activations = program.arena_bytes
        io = outside_bytes(program)  # 0: the generated C keeps its input and output
        source = "compiler"              # in the arena (compile-c's default)
        rows = profile_program(program, op_types(prepared)) if layers else None
    except UnsupportedModelError:
        prepared, shapes = prepare(proto, simplify=False)
        weight_bytes = stats.weight_bytes
        activations, io = _graph_memory(prepared, shapes)
        source = "graph"
        rows = None
    if rows is not None and instructions:
        with tempfile.TemporaryDirectory(prefix="tinymlaas-layers-") as tmp:
            rows = add_instructions(rows, proto, tmp)
    operators = _operators(proto)
    unsupported = {
        r: sorted({o.op_type for o in operators if not o.runtimes[r]}) for r in RUNTIMES
    }
    analysis = Analysis(
        model=label,
        parameters=stats.parameters,
        weight_bytes=weight_bytes,
        activation_bytes=activations,
        io_bytes=io,
        macs=count_macs(prepared),
        quantized=quantized,
        memory_source=source,
        operators=operators,
        unsupported=unsupported,
        layers=rows,
    )
    if device is not None:
        analysis.fit = fit_verdict(analysis, device, runtime=runtime)
    return analysis


def fit_verdict(analysis: Analysis, device: Device | str, *, runtime: str = "c") -> FitVerdict:
    """Compare an analysis with a device's flash, RAM and runtimes.

    Flash needed is the weights plus the runtime's code (:data:`RUNTIME_FLASH_BYTES`);
    RAM needed is the activation arena, the I/O buffers and the runtime's own state. A model
    with operators the runtime lacks gets the verdict ``unsupported ops`` (its memory figures
    are then the graph's estimate), not a memory verdict.
    """
    profile = get_device(device) if isinstance(device, str) else device
    flash_needed = analysis.weight_bytes + RUNTIME_FLASH_BYTES[runtime]
    ram_needed = analysis.ram_bytes + RUNTIME_RAM_BYTES[runtime]
    flash_available = profile.flash_kb * 1024
    ram_available = profile.ram_kb * 1024
    reasons = []
    if flash_needed > flash_available:
        reasons.append(
            f"needs {_size(flash_needed)} of flash (weights {_size(analysis.weight_bytes)} + "
            f"{runtime} runtime), {profile.name} has {_size(flash_available)}: "
            f"{_size(flash_needed - flash_available)} over"
        )
    if ram_needed > ram_available:
        reasons.append(
            f"needs {_size(ram_needed)} of RAM (activations {_size(analysis.activation_bytes)} "
            f"+ I/O {_size(analysis.io_bytes)}), {profile.name} has {_size(ram_available)}: "
            f"{_size(ram_needed - ram_available)} over"
        )
    if profile.runtimes and runtime not in profile.runtimes:
        reasons.append(f"{profile.name} does not list the {runtime} runtime "
                       f"(it has {', '.join(profile.runtimes)})")
    missing = analysis.unsupported.get(runtime, [])
    verdict: Verdict = "unsupported ops" if missing else "does not fit" if reasons else "fits"
    if missing:
        reasons.append(f"{runtime} does not support {', '.join(missing)}")
    seconds = analysis.macs / (profile.clock_mhz * 1e6 * profile.macs_per_cycle)
    return FitVerdict(
        device=profile.name,
        runtime=runtime,
        fits=not reasons,
        flash_needed_bytes=flash_needed,
        flash_available_bytes=flash_available,
        flash_margin_pct=100.0 * (flash_available - flash_needed) / flash_available,
        ram_needed_bytes=ram_needed,
        ram_available_bytes=ram_available,
        ram_margin_pct=100.0 * (ram_available - ram_needed) / ram_available,
        latency_ms_estimate=seconds * 1000.0,
        reasons=reasons,
        verdict=verdict,
        unsupported_ops=missing,
        weight_bytes=analysis.weight_bytes,
        activation_bytes=analysis.activation_bytes,
        io_bytes=analysis.io_bytes,
        memory_source=analysis.memory_source,
    )
