"""Static memory planning: one arena, offsets from buffer lifetimes.

Lifetimes come from the kernel order (a buffer lives from the first kernel that touches it
to the last). Buffers are placed one by one, each into the best-fitting gap left by
already placed buffers whose lifetimes overlap it (greedy best fit, as TFLite Micro's
greedy planner but choosing the tightest gap); this runs for a few placement orders
(largest first, as TFLite Micro, and others) and keeps the smallest arena. Before
planning, a kernel's result may take over an input buffer that dies at that kernel
(in-place elementwise ops).

The model's inputs and outputs are planned like any other buffer by default
(``io="arena"``): an input lives from the start to its last reader, an output from its
producer to the end, and their space is reused by other buffers outside those spans. With
``io="caller"`` they stay out of the arena, in arrays the caller passes to ``<name>_run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tinymlaas.compiler.ir import At, Buffer, Program, Tensor

__all__ = [
    "ALIGNMENT",
    "IO_MODES",
    "PLACEMENT_ORDERS",
    "IOMode",
    "Interval",
    "apply_inplace",
    "compute_lifetimes",
    "outside_bytes",
    "plan_arena",
    "plan_program",
]

#: Arena offsets are multiples of this many bytes (SIMD loads, any scalar type).
ALIGNMENT = 16

#: Where the model's inputs and outputs live: in the arena, or in the caller's arrays.
IOMode = Literal["arena", "caller"]
IO_MODES: tuple[str, ...] = ("arena", "caller")


@dataclass
class Interval:
    """A buffer to place: bytes and the first and last kernel step using it."""

    nbytes: int
    first: int
    last: int
    offset: int = -1


def _align(value: int, alignment: int = ALIGNMENT) -> int:
    return (value + alignment - 1) // alignment * alignment


#: Orders in which :func:`plan_arena` places buffers; it keeps the smallest arena. Largest
#: first is TFLite Micro's greedy order; the others win where lifetimes interleave (the
#: model input of a MobileNet: by size x lifetime it reaches the busiest step's bytes).
PLACEMENT_ORDERS: tuple[tuple[str, object], ...] = (
    ("size", lambda i: (-i.nbytes, i.first)),
    ("size-x-lifetime", lambda i: (-i.nbytes * (i.last - i.first + 1), i.first)),
    ("lifetime", lambda i: (-(i.last - i.first), -i.nbytes)),
    ("first-use", lambda i: (i.first, -i.nbytes)),
)


def _place(intervals: list[Interval], order: list[int], alignment: int) -> list[int]:
    """Best-fit offsets, placing the intervals in ``order``."""
    offsets = [-1] * len(intervals)
    placed: list[int] = []
    for index in order:
        item = intervals[index]
        size = _align(item.nbytes, alignment)
        busy = sorted(
            (p for p in placed
             if intervals[p].first <= item.last and item.first <= intervals[p].last),
            key=lambda p: offsets[p],
        )
        best_offset, best_gap = -1, None
        cursor = 0
        for other in busy:
            gap = offsets[other] - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best_offset, best_gap = cursor, gap
            cursor = max(cursor, offsets[other] + _align(intervals[other].nbytes, alignment))
        offsets[index] = best_offset if best_offset >= 0 else cursor
        placed.append(index)
    return offsets


def plan_arena(intervals: list[Interval], alignment: int = ALIGNMENT) -> int:
    """Give each interval an arena offset; return the arena size in bytes.

    Greedy best fit in each of :data:`PLACEMENT_ORDERS`; the smallest arena wins (the
    first order on a tie).

    Args:
        intervals: Buffers with lifetimes; ``offset`` is filled in.
        alignment: Offset alignment in bytes.

    Returns:
        The arena size: the highest end offset over all intervals (aligned).
    """
    best: tuple[int, list[int]] | None = None
    for _, key in PLACEMENT_ORDERS:
        order = sorted(range(len(intervals)), key=lambda i: key(intervals[i]))  # type: ignore[operator]
        offsets = _place(intervals, order, alignment)
        size = max((_align(o + i.nbytes, alignment) for o, i in zip(offsets, intervals,
                                                                     strict=True)), default=0)
        if best is None or size < best[0]:
            best = (size, offsets)
    size, offsets = best if best is not None else (0, [])
    for interval, offset in zip(intervals, offsets, strict=True):
        interval.offset = offset
    return size


def compute_lifetimes(program: Program) -> None:
    """Set ``first`` / ``last`` kernel steps on every buffer of the program.

    A model input is live from step 0 (the caller writes it before the run) and a model
    output up to the last step (the caller reads it after the run).
    """
    for buffer in program.buffers():
        buffer.first, buffer.last = -1, -1
    for step, kernel in enumerate(program.kernels):
        for arg in kernel.args:
            if hasattr(arg, "buffer"):
                arg.buffer.touch(step)
    end = max(len(program.kernels) - 1, 0)
    for tensor in program.inputs:
        tensor.buffer.touch(0)
    for tensor in program.outputs:
        tensor.buffer.touch(end)


def apply_inplace(program: Program) -> int:
    """Let results reuse a dying input's arena buffer where the kernel allows it.

    Returns:
        How many buffers were merged away.
    """
    compute_lifetimes(program)
    tensors = _tensors(program)
    merged = 0
    for step, kernel in enumerate(program.kernels):
        for out, src in kernel.inplace:
            a, b = out.buffer, src.buffer
            if a is b or a.kind != "arena" or b.kind != "arena":
                continue
            if b.last != step or a.first != step or a.nbytes != b.nbytes:
                continue
            for tensor in tensors:
                if tensor.buffer is a:
                    tensor.buffer = b
            b.last = max(b.last, a.last)
            merged += 1
    return merged


def _tensors(program: Program) -> list[Tensor]:
    seen: dict[int, Tensor] = {}
    for kernel in program.kernels:
        for arg in kernel.args:
            if isinstance(arg, At):
                arg = arg.tensor
            if isinstance(arg, Tensor):
                seen.setdefault(id(arg), arg)
    for tensor in [*program.inputs, *program.outputs]:
        seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def plan_program(program: Program, io: IOMode = "arena") -> int:
    """In-place merges, lifetimes and arena offsets for a program; returns the arena size.

    Args:
        program: The lowered program; buffer offsets and ``arena_bytes`` are filled in.
        io: ``"arena"`` plans the model's inputs and outputs into the arena; ``"caller"``
            leaves them to the caller's arrays.
    """
    if io not in IO_MODES:
        raise ValueError(f"io must be one of {', '.join(IO_MODES)}, not {io!r}")
    apply_inplace(program)
    compute_lifetimes(program)
    kinds = ("arena", "input", "output") if io == "arena" else ("arena",)
    arena: list[Buffer] = [b for b in program.buffers() if b.kind in kinds]
    intervals = [Interval(b.nbytes, max(b.first, 0), max(b.last, 0)) for b in arena]
    size = plan_arena(intervals)
    for buffer in program.buffers():
        buffer.offset = -1
    for buffer, interval in zip(arena, intervals, strict=True):
        buffer.offset = interval.offset
    program.arena_bytes = size
    program.io = io
    return size


def outside_bytes(program: Program) -> int:
    """Bytes of the model's input and output arrays kept outside the arena."""
    buffers = {id(t.buffer): t.buffer for t in [*program.inputs, *program.outputs]}
    return sum(b.nbytes for b in buffers.values() if b.offset < 0)
