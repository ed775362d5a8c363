"""The compiler's intermediate form: buffers, tensors and kernel calls.

A :class:`Program` is a straight-line list of :class:`Kernel` calls over
:class:`Tensor` views of :class:`Buffer` memory. Buffers are of four kinds: the model's
inputs and outputs, read-only constants (flash), and intermediate results in the static
arena (RAM), where the memory planner gives each buffer an offset. The planner also places
inputs and outputs in the arena unless the caller keeps them (``Program.io``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Literal

import numpy as np
from pydantic import BaseModel

__all__ = ["At", "Buffer", "CArray", "IOSpec", "Kernel", "Program", "Tensor"]

BufferKind = Literal["arena", "input", "output", "const"]


@dataclass(eq=False)
class Buffer:
    """A block of memory; several tensors may view it (reshapes, in-place results)."""

    nbytes: int
    kind: BufferKind
    index: int = -1
    data: np.ndarray | None = None
    offset: int = -1
    first: int = -1
    last: int = -1

    def touch(self, step: int) -> None:
        """Extend the lifetime to cover kernel ``step``."""
        self.first = step if self.first < 0 else min(self.first, step)
        self.last = max(self.last, step)


@dataclass(eq=False)
class Tensor:
    """A typed, shaped view of a buffer."""

    shape: tuple[int, ...]
    dtype: np.dtype
    buffer: Buffer
    name: str = ""

    @property
    def size(self) -> int:
        return int(prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(eq=False)
class At:
    """A tensor seen from a byte offset (a slice written by a concatenation)."""

    tensor: Tensor
    offset: int

    @property
    def buffer(self) -> Buffer:
        return self.tensor.buffer


@dataclass(eq=False)
class CArray:
    """A small read-only parameter table (strides, multipliers) passed to a kernel."""

    values: np.ndarray


@dataclass(eq=False)
class Kernel:
    """One call of a C kernel.

    Attributes:
        func: Kernel function name (see :mod:`tinymlaas.compiler.ckernels`).
        args: Positional arguments: tensors, tables, ints, floats or ``None`` (NULL).
        writes: The tensors among ``args`` the kernel writes.
        inplace: ``(output, input)`` pairs that may share memory when the input dies here.
        nodes: Names of the ONNX nodes the call implements.
        macs: Multiply-accumulates of the call.
    """

    func: str
    args: list[object]
    writes: list[Tensor | At]
    inplace: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    nodes: tuple[str, ...] = ()
    macs: int = 0

    @property
    def reads(self) -> list[Tensor | At]:
        written = {id(t) for t in self.writes}
        return [a for a in self.args if isinstance(a, Tensor | At) and id(a) not in written]


class IOSpec(BaseModel):
    """One model input or output as the C API sees it."""

    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def size(self) -> int:
        return int(prod(self.shape))


@dataclass
class Program:
    """A lowered model ready for planning and code generation."""

    kernels: list[Kernel]
    inputs: list[Tensor]
    outputs: list[Tensor]
    input_specs: list[IOSpec]
    output_specs: list[IOSpec]
    unsupported: list[str] = field(default_factory=list)
    arena_bytes: int = 0
    #: ``"arena"``: inputs and outputs have arena offsets; ``"caller"``: caller's arrays.
    io: str = "caller"

    def buffers(self) -> list[Buffer]:
        """Every distinct buffer the kernels touch, in first-use order."""
        seen: dict[int, Buffer] = {}
        for kernel in self.kernels:
            for arg in kernel.args:
                if isinstance(arg, Tensor | At):
                    seen.setdefault(id(arg.buffer), arg.buffer)
        for tensor in [*self.inputs, *self.outputs]:
            seen.setdefault(id(tensor.buffer), tensor.buffer)
        return list(seen.values())

    def const_bytes(self) -> int:
        """Bytes of constant data (weights, biases, tables) the program keeps in flash."""
        total = sum(b.nbytes for b in self.buffers() if b.kind == "const")
        tables = {
            id(a): a.values.nbytes
            for k in self.kernels
            for a in k.args
            if isinstance(a, CArray)
        }
        return total + sum(tables.values())

    def macs(self) -> int:
        return sum(k.macs for k in self.kernels)
