"""A per-layer profile of a planned program: one row per generated kernel call.

Each row says which ONNX nodes the call implements, their operator types, its MACs, the
shape it writes, the bytes live in the arena while it runs (the buffers whose planner
lifetime covers its step) and the constant bytes (weights, biases, tables) it owns. A
constant shared by several calls belongs to the first. The totals agree with the
whole-program figures: the flash column sums to :meth:`Program.const_bytes`, the MACs to
:meth:`Program.macs`, and the largest live figure is at most the arena size (the arena
also holds alignment padding and the gaps best-fit placement leaves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from pydantic import BaseModel, Field

from tinymlaas.compiler.ir import At, Buffer, CArray, Program, Tensor

__all__ = ["LayerProfile", "add_instructions", "op_types", "profile_model",
           "profile_program"]


class LayerProfile(BaseModel):
    """One kernel call of a compiled model, in execution order."""

    step: int = Field(description="position in execution order, from 0")
    kernel: str = Field(description="the C kernel function called")
    nodes: list[str] = Field(description="names of the ONNX nodes the call implements")
    op_type: str = Field(description="their operator types, '+'-joined (e.g. Conv+Relu)")
    macs: int
    output_shape: list[int] = Field(description="shape of the first tensor it writes")
    live_bytes: int = Field(description="bytes of the arena buffers live at this step")
    flash_bytes: int = Field(description="constant bytes this call owns (first use)")
    instructions: int | None = Field(default=None, description="instructions it retires on "
                                     "the emulated Cortex-M4, when measured")


def op_types(model: onnx.ModelProto) -> dict[str, str]:
    """Node label -> operator type, with the labels kernels use (:attr:`Kernel.nodes`: the
    node's name, or its first output's when it has none)."""
    return {n.name or n.output[0]: n.op_type for n in model.graph.node}


def _arena_buffers(program: Program) -> list[Buffer]:
    """The buffers the planner placed in the arena (an offset), with their lifetimes."""
    return [b for b in program.buffers() if b.kind != "const" and b.offset >= 0]


def profile_program(program: Program, types: dict[str, str] | None = None) \
        -> list[LayerProfile]:
    """The per-layer rows of a planned program (see :func:`~tinymlaas.compiler.planner.
    plan_program`).

    Args:
        program: A lowered and planned program.
        types: Node label -> operator type (:func:`op_types` of the prepared graph).
    """
    types = types or {}
    arena = _arena_buffers(program)
    owned: set[int] = set()
    rows = []
    for step, kernel in enumerate(program.kernels):
        flash = 0
        for arg in kernel.args:
            key = id(arg.buffer) if isinstance(arg, Tensor | At) else id(arg)
            if key in owned:
                continue
            if isinstance(arg, CArray):
                flash += arg.values.nbytes
            elif isinstance(arg, Tensor | At) and arg.buffer.kind == "const":
                flash += arg.buffer.nbytes
            else:
                continue
            owned.add(key)
        written = kernel.writes[0] if kernel.writes else None
        tensor = written.tensor if isinstance(written, At) else written
        names = list(dict.fromkeys(types.get(n, "?") for n in kernel.nodes))
        rows.append(LayerProfile(
            step=step, kernel=kernel.func, nodes=list(kernel.nodes),
            op_type="+".join(names), macs=kernel.macs,
            output_shape=list(tensor.shape) if tensor is not None else [],
            live_bytes=sum(b.nbytes for b in arena if b.first <= step <= b.last),
            flash_bytes=flash))
    return rows


def profile_model(model: str | Path | onnx.ModelProto, **options: Any) -> list[LayerProfile]:
    """Build and plan a model as :func:`~tinymlaas.compiler.api.build_program` does
    (``options`` are its keyword arguments) and profile it."""
    from tinymlaas.compiler.api import build_program

    program, prepared = build_program(model, **options)
    return profile_program(program, op_types(prepared))


def add_instructions(rows: list[LayerProfile], model: str | Path | onnx.ModelProto,
                     work_dir: str | Path, *, target: str = "cortex-m4", seed: int = 0,
                     **options: Any) -> list[LayerProfile]:
    """The rows with each call's instructions on the emulated Cortex-M4
    (:func:`~tinymlaas.compiler.instructions.measure_layer_instructions`, one random input).

    Args:
        rows: The profile of ``model`` built with the same ``options``.
        model: The model.
        work_dir: Where the sources and the firmware go.
        target: The target compiled for (its kernel set is the one counted).
        seed: Seed of the random input.
        options: ``simplify``, ``fuse_residual``, ``io`` as for the profile.

    Raises:
        ServiceUnavailableError: The Arm toolchain or QEMU is missing.
    """
    import numpy as np

    from tinymlaas.compiler.api import compile_onnx
    from tinymlaas.compiler.instructions import measure_layer_instructions

    work = Path(work_dir)
    result = compile_onnx(model, work / "src", target=target, layer_marks=True, **options)
    rng = np.random.default_rng(seed)
    inputs = []
    for spec in result.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            info = np.iinfo(spec.dtype)
            inputs.append(rng.integers(info.min, info.max + 1, (1, *spec.shape[1:]))
                          .astype(spec.dtype))
        else:
            inputs.append(rng.normal(size=(1, *spec.shape[1:])).astype(spec.dtype))
    counts = measure_layer_instructions(result, inputs, work / "firmware")
    if len(counts.per_layer) != len(rows):
        raise ValueError(f"{len(counts.per_layer)} counted calls for {len(rows)} rows")
    return [row.model_copy(update={"instructions": n})
            for row, n in zip(rows, counts.per_layer, strict=True)]
