"""Lowering: an ONNX graph (static shapes) to a :class:`~tinymlaas.compiler.ir.Program`.

Nodes are visited in graph order. Each operator handler (``ops_*`` modules) reads the
values of its inputs and emits kernel calls. Quantized (QDQ) graphs are lowered by
pattern: ``DequantizeLinear`` on activations is lazy (:class:`QAct`), and an operator
whose inputs are lazy or constant-quantized and whose result is quantized again
(``op -> [Add bias] -> [Relu|Clip] -> QuantizeLinear``) becomes one integer kernel.
Anything that does not match falls back to float arithmetic, which is always correct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tinymlaas.compiler.ir import At, Buffer, CArray, IOSpec, Kernel, Program, Tensor
from tinymlaas.compiler.values import Act, Const, QAct, QConst, Value
from tinymlaas.errors import UnsupportedModelError

__all__ = [
    "FLOAT",
    "QUANT_TYPES",
    "TYPE_CODES",
    "FloatTail",
    "Lowering",
    "Tail",
    "attributes",
    "byte_code",
    "lower",
    "register",
    "type_code",
]

FLOAT = np.dtype(np.float32)
TYPE_CODES: dict[np.dtype, str] = {
    np.dtype(np.float32): "f32",
    np.dtype(np.int8): "s8",
    np.dtype(np.uint8): "u8",
    np.dtype(np.int16): "s16",
    np.dtype(np.uint16): "u16",
    np.dtype(np.int32): "s32",
    np.dtype(np.int64): "s64",
}
QUANT_TYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_BYTE_CODES = {1: "b8", 2: "b16", 4: "b32", 8: "b64"}

Handler = Callable[["Lowering", onnx.NodeProto], None]


def register(*op_types: str) -> Callable[[Handler], Handler]:
    """Register an operator handler for the given ONNX op types."""

    def decorate(handler: Handler) -> Handler:
        for op_type in op_types:
            Lowering.handlers[op_type] = handler
        return handler

    return decorate


def type_code(dtype: np.dtype) -> str:
    """Kernel name code of a dtype (``f32``, ``s8`` ...)."""
    return TYPE_CODES[np.dtype(dtype)]


def byte_code(dtype: np.dtype) -> str:
    """Kernel name code for layout kernels, which only care about element width."""
    return _BYTE_CODES[np.dtype(dtype).itemsize]


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded)."""
    out: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        out[attribute.name] = value
    return out


@dataclass
class Tail:
    """What follows an operator up to a ``QuantizeLinear``: fused bias and activation."""

    quantize: onnx.NodeProto
    nodes: list[onnx.NodeProto]
    scale: float
    zero_point: int
    dtype: np.dtype
    bias: np.ndarray | None = None
    low: float = -np.inf
    high: float = np.inf

    @property
    def output(self) -> str:
        return self.quantize.output[0]

    def int_bounds(self) -> tuple[int, int]:
        """Activation bounds in the output's integer domain, within its dtype range."""
        info = np.iinfo(self.dtype)
        low, high = int(info.min), int(info.max)
        if np.isfinite(self.low):
            q = np.rint(np.float32(self.low) / np.float32(self.scale)) + self.zero_point
            low = max(low, int(q))
        if np.isfinite(self.high):
            q = np.rint(np.float32(self.high) / np.float32(self.scale)) + self.zero_point
            high = min(high, int(q))
        return low, high


@dataclass
class FloatTail:
    """A bias ``Add`` and/or ``Relu``/``Clip`` fused into a float kernel."""

    output: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    bias: np.ndarray | None = None
    low: float = -np.inf
    high: float = np.inf


class Lowering:
    """Lowers one prepared ONNX model; see :func:`lower`."""

    handlers: ClassVar[dict[str, Handler]] = {}

    def __init__(
        self,
        model: onnx.ModelProto,
        shapes: dict[str, list[int]],
        *,
        strict: bool = True,
        fuse_residual: bool = True,
    ) -> None:
        self.model = model
        self.fuse_residual = fuse_residual
        self.graph = model.graph
        self.shapes = shapes
        self.strict = strict
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.values: dict[str, Value] = {}
        self.kernels: list[Kernel] = []
        self.skip: set[int] = set()
        self.unsupported: list[str] = []
        self.graph_outputs = {o.name for o in self.graph.output}
        self.consumers: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
        for index, node in enumerate(self.graph.node):
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append((index, node))
        self.producers: dict[str, onnx.NodeProto] = {
            name: node for node in self.graph.node for name in node.output if name
        }
        self._consts: dict[str, Tensor] = {}
        self._dequantized: dict[int, Tensor] = {}
        self.input_specs: list[IOSpec] = []
        self.current: onnx.NodeProto | None = None

    # ----------------------------------------------------------------- errors
    def fail(self, reason: str, node: onnx.NodeProto | None = None) -> UnsupportedModelError:
        """An :class:`UnsupportedModelError` naming the node being lowered."""
        node = node or self.current
        label = f"{node.op_type} node {node.name or node.output[0]!r}" if node else "model"
        return UnsupportedModelError(
            f"Cannot compile {label}: {reason}.",
            {
                "nodes": [node.name or node.output[0]] if node else [],
                "op_type": node.op_type if node else None,
                "reason": reason,
            },
        )

    # ----------------------------------------------------------------- values
    def has(self, node: onnx.NodeProto, index: int) -> bool:
        return len(node.input) > index and bool(node.input[index])

    def value(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise self.fail(f"input {name!r} has no value (missing initializer?)") from None

    def shape_of(self, name: str) -> tuple[int, ...]:
        value = self.values.get(name)
        if isinstance(value, Const):
            return tuple(value.array.shape)
        if isinstance(value, QConst):
            return tuple(value.q.shape)
        if isinstance(value, Act | QAct):
            return value.tensor.shape
        if name in self.shapes:
            return tuple(self.shapes[name])
        raise self.fail(f"the shape of {name!r} is unknown")

    def out_shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise self.fail(f"the shape of output {name!r} could not be inferred")
        return tuple(int(d) for d in self.shapes[name])

    def const(self, name: str) -> np.ndarray | None:
        """The float (or integer) constant behind a value, if it is one."""
        value = self.values.get(name)
        if isinstance(value, Const):
            return value.array
        if isinstance(value, QConst):
            return value.dequantize()
        return None

    def const64(self, name: str) -> np.ndarray | None:
        value = self.values.get(name)
        if isinstance(value, Const):
            return value.array.astype(np.float64)
        if isinstance(value, QConst):
            return value.dequantize64()
        return None

    def set(self, name: str, value: Value) -> None:
        self.values[name] = value

    # ---------------------------------------------------------------- tensors
    def new(self, shape: tuple[int, ...] | list[int], dtype: np.dtype) -> Tensor:
        """A fresh arena tensor."""
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        return Tensor(shape, dtype, Buffer(max(1, prod(shape)) * dtype.itemsize, "arena"))

    def view(self, tensor: Tensor, shape: tuple[int, ...] | list[int]) -> Tensor:
        """The same memory with another shape."""
        return Tensor(tuple(int(d) for d in shape), tensor.dtype, tensor.buffer)

    def const_tensor(self, array: np.ndarray) -> Tensor:
        """A read-only tensor in flash; identical constants are stored once."""
        array = np.ascontiguousarray(array)
        key = hashlib.sha256(
            array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()
        ).hexdigest()
        if key not in self._consts:
            buffer = Buffer(max(1, array.nbytes), "const", data=array)
            self._consts[key] = Tensor(tuple(array.shape), array.dtype, buffer)
        return self._consts[key]

    def raw(self, name: str) -> Tensor:
        """The stored tensor of a value (integers stay integers)."""
        value = self.value(name)
        if isinstance(value, Act | QAct):
            return value.tensor
        if isinstance(value, QConst):
            return self.const_tensor(value.q)
        return self.const_tensor(value.array)

    def as_float(self, name: str) -> Tensor:
        """A float32 tensor of a value, dequantizing lazily quantized data once."""
        value = self.value(name)
        if isinstance(value, Act):
            if value.tensor.dtype != FLOAT:
                raise self.fail(f"{value.tensor.dtype} data is only supported in quantized "
                                "patterns and layout operators")
            return value.tensor
        if isinstance(value, QAct):
            key = id(value.tensor)
            if key not in self._dequantized:
                src = value.tensor
                out = self.new(src.shape, FLOAT)
                self.emit(
                    f"tm_dequantize_{type_code(src.dtype)}",
                    [src, out, 1, 1, src.size, CArray(np.array([value.scale], np.float32)),
                     CArray(np.array([value.zero_point], src.dtype))],
                    [out],
                )
                self._dequantized[key] = out
            return self._dequantized[key]
        if isinstance(value, QConst):
            return self.const_tensor(value.dequantize())
        if not np.issubdtype(value.array.dtype, np.floating) or value.array.dtype != FLOAT:
            if value.array.dtype.kind == "f":
                raise self.fail(f"{value.array.dtype} constants are not supported")
            return self.const_tensor(value.array.astype(np.float32))
        return self.const_tensor(value.array)

    def emit(
        self,
        func: str,
        args: list[object],
        writes: list[Tensor | At],
        *,
        inplace: list[tuple[Tensor, Tensor]] | None = None,
        macs: int = 0,
        nodes: list[onnx.NodeProto] | None = None,
    ) -> Kernel:
        """Append a kernel call for the node being lowered."""
        named = [self.current, *(nodes or [])] if self.current is not None else (nodes or [])
        kernel = Kernel(
            func,
            args,
            writes,
            inplace=inplace or [],
            nodes=tuple(n.name or n.output[0] for n in named),
            macs=macs,
        )
        self.kernels.append(kernel)
        return kernel

    # ---------------------------------------------------------------- fusion
    def sole_consumer(self, name: str) -> tuple[int, onnx.NodeProto] | None:
        """The only node reading ``name``, if it is not also a graph output."""
        users = self.consumers.get(name, [])
        if name in self.graph_outputs or len(users) != 1:
            return None
        index, node = users[0]
        return None if index in self.skip else (index, node)

    def _clip_bounds(self, node: onnx.NodeProto) -> tuple[float, float] | None:
        if self.opset < 11:
            attrs = attributes(node)
            return float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
        low, high = -np.inf, np.inf
        if self.has(node, 1):
            c = self.const(node.input[1])
            if c is None:
                return None
            low = float(c.ravel()[0])
        if self.has(node, 2):
            c = self.const(node.input[2])
            if c is None:
                return None
            high = float(c.ravel()[0])
        return low, high

    def _activation(self, node: onnx.NodeProto) -> tuple[float, float] | None:
        if node.op_type == "Relu":
            return 0.0, np.inf
        if node.op_type == "Clip":
            return self._clip_bounds(node)
        return None

    def _bias_of(self, add: onnx.NodeProto, name: str, channels: int) -> np.ndarray | None:
        other = add.input[1] if add.input[0] == name else add.input[0]
        if add.input[0] == add.input[1]:
            return None
        bias = self.const64(other)
        if bias is None or bias.size not in (1, channels):
            return None
        if bias.ndim and bias.shape[-1] not in (1, channels):
            return None
        if bias.ndim > 1 and prod(bias.shape[:-1]) != 1:
            return None
        return np.broadcast_to(bias.reshape(-1), (channels,)).copy()

    def match_tail(
        self,
        node: onnx.NodeProto,
        *,
        bias_channels: int | None = None,
        activation: bool = True,
    ) -> Tail | None:
        """Match ``node -> [Add bias] -> [Relu|Clip] -> QuantizeLinear`` (per-tensor)."""
        name = node.output[0]
        nodes: list[onnx.NodeProto] = []
        bias = None
        low, high = -np.inf, np.inf
        found = self.sole_consumer(name)
        if found and bias_channels and found[1].op_type == "Add":
            bias = self._bias_of(found[1], name, bias_channels)
            if bias is not None:
                nodes.append(found[1])
                name = found[1].output[0]
                found = self.sole_consumer(name)
        if found and activation and found[1].op_type in ("Relu", "Clip"):
            bounds = self._activation(found[1])
            if bounds is not None:
                low, high = bounds
                nodes.append(found[1])
                name = found[1].output[0]
                found = self.sole_consumer(name)
        if not found or found[1].op_type != "QuantizeLinear":
            return None
        q = found[1]
        params = self.quant_params(q)
        if params is None:
            return None
        scale, zero_point, dtype = params
        if dtype not in QUANT_TYPES:
            return None
        return Tail(q, [*nodes, q], scale, zero_point, dtype, bias, low, high)

    def match_float_tail(
        self, node: onnx.NodeProto, *, bias_channels: int | None = None
    ) -> FloatTail:
        """Match ``node -> [Add bias] -> [Relu|Clip]`` for float kernels."""
        tail = FloatTail(node.output[0])
        found = self.sole_consumer(tail.output)
        if found and bias_channels and found[1].op_type == "Add":
            bias = self._bias_of(found[1], tail.output, bias_channels)
            if bias is not None and self._float_input(found[1], tail.output):
                tail.bias = bias.astype(np.float32)
                tail.nodes.append(found[1])
                tail.output = found[1].output[0]
                found = self.sole_consumer(tail.output)
        if found and found[1].op_type in ("Relu", "Clip"):
            bounds = self._activation(found[1])
            if bounds is not None:
                tail.low, tail.high = bounds
                tail.nodes.append(found[1])
                tail.output = found[1].output[0]
        return tail

    def _float_input(self, add: onnx.NodeProto, name: str) -> bool:
        other = add.input[1] if add.input[0] == name else add.input[0]
        value = self.values.get(other)
        return isinstance(value, QConst) or (
            isinstance(value, Const) and value.array.dtype == FLOAT
        )

    def peek_qact(self, name: str) -> QAct | None:
        """The lazily dequantized value of ``name``, even before its DQ node is visited."""
        value = self.values.get(name)
        if isinstance(value, QAct):
            return value
        node = self.producers.get(name)
        if value is not None or node is None or node.op_type != "DequantizeLinear":
            return None
        source = self.values.get(node.input[0])
        params = self.quant_params(node)
        if not isinstance(source, Act) or params is None or source.tensor.dtype != params[2]:
            return None
        return QAct(source.tensor, params[0], params[1], source.origin)

    def consume(self, nodes: list[onnx.NodeProto]) -> None:
        """Mark fused nodes as done."""
        ids = {id(n) for n in nodes}
        for index, node in enumerate(self.graph.node):
            if id(node) in ids:
                self.skip.add(index)

    def quant_params(self, node: onnx.NodeProto) -> tuple[float, int, np.dtype] | None:
        """Per-tensor (scale, zero point, dtype) of a Q/DQ node with constant parameters."""
        scale = self.const(node.input[1])
        if scale is None or scale.size != 1 or scale.dtype != FLOAT:
            return None
        attrs = attributes(node)
        if int(attrs.get("block_size", 0) or 0):
            return None
        if self.has(node, 2):
            zp_value = self.values.get(node.input[2])
            if not isinstance(zp_value, Const) or zp_value.array.size != 1:
                return None
            zp = zp_value.array
            dtype = zp.dtype
            zero_point = int(zp.ravel()[0])
        else:
            dtype = _output_dtype(attrs)
            zero_point = 0
        return float(scale.ravel()[0]), zero_point, np.dtype(dtype)

    # ---------------------------------------------------------------- driver
    def lower(self) -> Program:
        self._check_operators()
        inputs = self._bind_inputs()
        for index, node in enumerate(self.graph.node):
            if index in self.skip:
                continue
            self.current = node
            if self._fold(node):
                continue
            handler = self.handlers.get(node.op_type)
            if handler is None or node.domain not in ("", "ai.onnx"):
                self._opaque(node)
            else:
                handler(self, node)
        self.current = None
        outputs, output_specs = self._bind_outputs()
        return Program(
            self.kernels, inputs, outputs, self.input_specs, output_specs,
            unsupported=self.unsupported,
        )

    def _check_operators(self) -> None:
        constant = {i.name for i in self.graph.initializer}
        bad = []
        for n in self.graph.node:
            inputs = [i for i in n.input if i]
            foldable = n.op_type == "Shape" or (
                n.op_type != "DequantizeLinear" and all(i in constant for i in inputs)
            )
            if foldable:
                constant.update(o for o in n.output if o)
            elif n.op_type not in self.handlers or n.domain not in ("", "ai.onnx"):
                bad.append(n)
        if bad and self.strict:
            names = [n.name or n.output[0] for n in bad]
            ops = sorted({n.op_type for n in bad})
            raise UnsupportedModelError(
                f"The C compiler does not support operator(s) {', '.join(ops)} "
                f"(nodes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}).",
                {"nodes": names, "op_types": ops},
            )
        self.unsupported = [n.name or n.output[0] for n in bad]

    def _bind_inputs(self) -> list[Tensor]:
        for init in self.graph.initializer:
            self.values[init.name] = Const(numpy_helper.to_array(init))
        inputs: list[Tensor] = []
        for value_info in self.graph.input:
            if value_info.name in self.values:
                continue
            elem = value_info.type.tensor_type.elem_type
            dtype = _np_dtype(elem)
            if dtype is None:
                raise self.fail(f"input {value_info.name!r} has unsupported element type {elem}")
            shape = self.out_shape(value_info.name)
            index = len(inputs)
            buffer = Buffer(max(1, prod(shape)) * dtype.itemsize, "input", index=index)
            tensor = Tensor(tuple(shape), dtype, buffer, name=value_info.name)
            inputs.append(tensor)
            self.values[value_info.name] = Act(tensor, origin=index)
            self.input_specs.append(IOSpec(name=value_info.name, shape=list(shape),
                                           dtype=dtype.name))
        return inputs

    def _bind_outputs(self) -> tuple[list[Tensor], list[IOSpec]]:
        outputs: list[Tensor] = []
        specs: list[IOSpec] = []
        claimed: set[int] = set()
        for index, value_info in enumerate(self.graph.output):
            name = value_info.name
            value = self.value(name)
            want = _np_dtype(value_info.type.tensor_type.elem_type)
            qparams = value.qparams if isinstance(value, Act) else None
            if isinstance(value, QAct) or (want == FLOAT and isinstance(value, QConst)):
                tensor = self.as_float(name)
            else:
                tensor = self.raw(name)
            if want is not None and tensor.dtype != want:
                raise self.fail(f"output {name!r} would be {tensor.dtype}, the model says {want}")
            buffer = tensor.buffer
            if buffer.kind == "arena" and id(buffer) not in claimed:
                buffer.kind, buffer.index = "output", index
                claimed.add(id(buffer))
                out = tensor
            else:
                out = Tensor(tensor.shape, tensor.dtype,
                             Buffer(tensor.nbytes, "output", index=index))
                self.emit("tm_copy2d", [out, tensor, 1, tensor.nbytes, tensor.nbytes,
                                        tensor.nbytes], [out])
            out.name = name
            outputs.append(out)
            spec = IOSpec(name=name, shape=list(out.shape), dtype=out.dtype.name)
            if qparams is not None:
                spec.scale, spec.zero_point = qparams
            specs.append(spec)
        return outputs, specs

    def _fold(self, node: onnx.NodeProto) -> bool:
        """Evaluate nodes whose inputs are all constants (shape arithmetic and the like)."""
        if node.op_type in ("DequantizeLinear", "Constant"):
            return False
        if node.op_type == "Shape":
            value = self.values.get(node.input[0])
            if value is None:
                return False
            shape = np.array(self.shape_of(node.input[0]), dtype=np.int64)
            attrs = attributes(node)
            start = int(attrs.get("start", 0))
            end = attrs.get("end")
            self.set(node.output[0], Const(shape[start:None if end is None else int(end)]))
            return True
        names = [n for n in node.input if n]
        if not names or not all(isinstance(self.values.get(n), Const) for n in names):
            return False
        if node.domain not in ("", "ai.onnx"):
            return False
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
            feeds = {n: self.values[n].array for n in names}  # type: ignore[union-attr]
            results = evaluator.run(None, feeds)
        except Exception:
            return False
        for name, result in zip(node.output, results, strict=False):
            if name:
                self.set(name, Const(np.asarray(result)))
        return True

    def _opaque(self, node: onnx.NodeProto) -> None:
        """A stand-in for an unsupported operator (analysis only, never generated)."""
        args: list[object] = [self.raw(n) for n in node.input if n and n in self.values]
        writes: list[Tensor | At] = []
        for name in node.output:
            if not name:
                continue
            shape = self.shapes.get(name, [1])
            tensor = self.new(shape, FLOAT)
            self.set(name, Act(tensor))
            writes.append(tensor)
        self.emit(f"opaque_{node.op_type}", [*args, *writes], writes)


def _output_dtype(attrs: dict[str, Any]) -> np.dtype:
    elem = int(attrs.get("output_dtype", 0) or 0)
    dtype = _np_dtype(elem) if elem else np.dtype(np.uint8)
    return dtype if dtype is not None else np.dtype(np.uint8)


def _np_dtype(elem_type: int) -> np.dtype | None:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return None
    return dtype if dtype in TYPE_CODES else None


def lower(
    model: onnx.ModelProto,
    shapes: dict[str, list[int]],
    *,
    strict: bool = True,
    fuse_residual: bool = True,
) -> Program:
    """Lower a prepared model (static shapes) to kernel calls.

    Args:
        model: The model, already through :func:`tinymlaas.compiler.loader.prepare`.
        shapes: Static shape of every value.
        strict: Raise on unsupported operators; otherwise stand-ins keep the program
            usable for memory and size estimates (``Program.unsupported`` lists them).
        fuse_residual: Fuse a residual ``Add`` into the convolution producing one of its
            inputs, so that convolution's output is never stored (less RAM).

    Raises:
        UnsupportedModelError: An operator, attribute or dtype the compiler cannot handle.
    """
    from tinymlaas.compiler import ops  # noqa: F401 - registers the handlers

    return Lowering(model, shapes, strict=strict, fuse_residual=fuse_residual).lower()
