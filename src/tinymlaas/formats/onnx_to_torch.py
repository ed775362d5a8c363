"""ONNX to a trainable PyTorch module, for the common operator set of small networks.

The result is a ``torch.fx.GraphModule`` with real ``nn.Conv*``, ``nn.Linear`` and
``nn.BatchNorm*`` layers (so it trains, and torch-pruning can remove channels) and plain
functions for everything else. Quantized QDQ graphs convert back to float: a
``DequantizeLinear`` of stored weights is folded into float weights and activation Q/DQ
pairs are dropped.

Supported operators are listed in :data:`SUPPORTED_OPS`; any other raises
:class:`~tinymlaas.errors.UnsupportedModelError` naming the operator and the node.
(``onnx2torch`` would be the maintained alternative, but it imports torchvision, which
cannot be installed next to the pinned CPU torch.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from tinymlaas.errors import UnsupportedModelError

__all__ = ["SUPPORTED_OPS", "onnx_to_torch"]


def reshape_keep_batch(x: torch.Tensor, rest: list[int]) -> torch.Tensor:
    """Reshape every sample to ``rest``, keeping the batch dimension free."""
    return x.reshape(x.shape[0], *rest)


class _Converter:
    def __init__(self, model: onnx.ModelProto) -> None:
        from tinymlaas.evaluation.static import static_shapes, topological_sort

        topological_sort(model.graph)
        self.model = model
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                              for i in model.graph.initializer}
        try:
            self.shapes = static_shapes(model)
        except Exception:  # shapes only refine the conversion; ranks fall back to weights
            self.shapes = {}
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.names: set[str] = set()
        self.quantized: set[str] = set()

    # helpers ---------------------------------------------------------------------------

    def _name(self, hint: str) -> str:
        base = "".join(c if c.isalnum() else "_" for c in hint).strip("_") or "layer"
        if base[0].isdigit():
            base = "n_" + base
        name, i = base, 1
        while name in self.names or hasattr(nn.Module, name):
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def module(self, node: onnx.NodeProto, module: nn.Module, *args: Any) -> fx.Node:
        name = self._name(node.name or node.output[0])
        self.root.add_module(name, module)
        return self.graph.call_module(name, tuple(args))

    def value(self, name: str) -> Any:
        if name in self.env:
            return self.env[name]
        if name in self.consts:
            array = self.consts[name]
            attr = self._name("const_" + name)
            tensor = torch.from_numpy(np.array(array, copy=True))
            self.root.register_buffer(attr, tensor)
            self.env[name] = self.graph.get_attr(attr)
            return self.env[name]
        raise UnsupportedModelError(f"ONNX value {name!r} is used before it is produced")

    def const(self, node: onnx.NodeProto, index: int, what: str) -> Any:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise UnsupportedModelError(f"ONNX {node.op_type} node {node.name!r}: the {what} "
                                        f"({name}) must be a stored constant to convert it")
        return self.consts[name]

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return len(shape) if shape is not None else None

    # conversion --------------------------------------------------------------------------

    def run(self) -> fx.GraphModule:
        graph = self.model.graph
        for value in graph.input:
            if value.name not in self.consts:
                self.env[value.name] = self.graph.placeholder(self._name(value.name))
        for node in graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(
                    onnx.helper.get_attribute_value(node.attribute[0])) \
                    if node.attribute[0].name == "value" else \
                    np.array(onnx.helper.get_attribute_value(node.attribute[0]))
                continue
            if all(not i or i in self.consts for i in node.input) and \
                    node.op_type in _FOLDABLE:
                self.consts[node.output[0]] = _FOLDABLE[node.op_type](self, node)
                continue
            handler = _HANDLERS.get(node.op_type)
            if handler is None:
                raise UnsupportedModelError(
                    f"cannot convert ONNX operator {node.op_type} (node {node.name!r}) to "
                    f"PyTorch for training; supported: {', '.join(SUPPORTED_OPS)}",
                    {"op_type": node.op_type, "node": node.name})
            out = handler(self, node)
            self.env[node.output[0]] = out
        outputs = [self.value(o.name) for o in graph.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        gm = fx.GraphModule(self.root, self.graph)
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _padding(node: onnx.NodeProto, dims: int) -> tuple[list[int], list[int] | None]:
    """Symmetric padding for the layer, or (zeros, explicit F.pad list) when asymmetric."""
    attrs = _attrs(node)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"ONNX {node.op_type} node {node.name!r} uses auto_pad="
                                    f"{auto_pad}; re-export the model with explicit pads")
    pads = list(attrs.get("pads", [0] * (2 * dims)))
    begin, end = pads[:dims], pads[dims:]
    if begin == end:
        return begin, None
    explicit: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        explicit += [b, e]
    return [0] * dims, explicit


def _pad_input(c: _Converter, node: onnx.NodeProto, x: Any, explicit: list[int] | None,
               value: float = 0.0) -> Any:
    if explicit is None:
        return x
    return c.graph.call_function(nn.functional.pad, (x, explicit), {"value": value})


def _conv(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    weight = c.const(node, 1, "weight")
    bias = c.const(node, 2, "bias")
    attrs = _attrs(node)
    dims = weight.ndim - 2
    cls: Any = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(dims)
    if cls is None:
        raise UnsupportedModelError(f"ONNX Conv node {node.name!r} has a {weight.ndim}-d weight")
    groups = int(attrs.get("group", 1))
    padding, explicit = _padding(node, dims)
    conv: Any = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
               stride=tuple(attrs.get("strides", [1] * dims)), padding=tuple(padding),
               dilation=tuple(attrs.get("dilations", [1] * dims)), groups=groups,
               bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return c.module(node, conv, _pad_input(c, node, c.value(node.input[0]), explicit))


def _linear(c: _Converter, node: onnx.NodeProto, weight: Any, bias: Any) -> fx.Node:
    linear: Any = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
        if bias is not None:
            linear.bias.copy_(torch.from_numpy(bias.astype(np.float32).reshape(-1)))
    return c.module(node, linear, c.value(node.input[0]))


def _gemm(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    attrs = _attrs(node)
    if attrs.get("transA", 0):
        raise UnsupportedModelError(f"ONNX Gemm node {node.name!r} transposes its input")
    b = c.const(node, 1, "weight")
    weight = (b if attrs.get("transB", 0) else b.T) * float(attrs.get("alpha", 1.0))
    bias = c.const(node, 2, "bias")
    if bias is not None:
        bias = np.broadcast_to(bias * float(attrs.get("beta", 1.0)), (weight.shape[0],))
    return _linear(c, node, weight, bias)


def _matmul(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    if node.input[1] in c.consts and c.consts[node.input[1]].ndim == 2:
        return _linear(c, node, c.consts[node.input[1]].T, None)
    return c.graph.call_function(torch.matmul, (c.value(node.input[0]),
                                                c.value(node.input[1])))


def _batch_norm(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    scale, bias, mean, var = (c.const(node, i, w) for i, w in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    attrs = _attrs(node)
    rank = c.rank(node.input[0]) or 4
    cls: Any = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}.get(rank, nn.BatchNorm2d)
    bn: Any = cls(len(mean), eps=float(attrs.get("epsilon", 1e-5)),
             momentum=1.0 - float(attrs.get("momentum", 0.9)))
    with torch.no_grad():
        for target, array in ((bn.weight, scale), (bn.bias, bias), (bn.running_mean, mean),
                              (bn.running_var, var)):
            target.copy_(torch.from_numpy(array.astype(np.float32)))
    return c.module(node, bn, c.value(node.input[0]))


def _pool(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    attrs = _attrs(node)
    kernel = list(attrs["kernel_shape"])
    dims = len(kernel)
    padding, explicit = _padding(node, dims)
    strides = tuple(attrs.get("strides", [1] * dims))
    ceil = bool(attrs.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            raise UnsupportedModelError(f"ONNX MaxPool node {node.name!r} returns indices")
        cls: Any = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        pool = cls(tuple(kernel), strides, tuple(padding),
                   dilation=tuple(attrs.get("dilations", [1] * dims)), ceil_mode=ceil)
        x = _pad_input(c, node, c.value(node.input[0]), explicit, float("-inf"))
    else:
        cls = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]
        pool = cls(tuple(kernel), strides, tuple(padding), ceil_mode=ceil,
                   count_include_pad=bool(attrs.get("count_include_pad", 0)))
        x = _pad_input(c, node, c.value(node.input[0]), explicit)
    return c.module(node, pool, x)


def _global_pool(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    rank = c.rank(node.input[0]) or 4
    op = torch.amax if node.op_type == "GlobalMaxPool" else torch.mean
    return c.graph.call_function(op, (c.value(node.input[0]), list(range(2, rank))),
                                 {"keepdim": True})


def _flatten(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    axis = int(_attrs(node).get("axis", 1))
    x = c.value(node.input[0])
    if axis == 1:
        return c.graph.call_function(torch.flatten, (x, 1))
    if axis == 0:
        return c.graph.call_function(torch.reshape, (x, (1, -1)))
    shape = c.shapes.get(node.input[0])
    if shape is None:
        raise UnsupportedModelError(f"ONNX Flatten node {node.name!r}: unknown input shape")
    return c.graph.call_function(reshape_keep_batch,
                                 (c.graph.call_function(torch.flatten, (x, 1)),
                                  [int(np.prod(shape[1:axis])), int(np.prod(shape[axis:]))]))


def _reshape(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    x = c.value(node.input[0])
    src, dst = c.shapes.get(node.input[0]), c.shapes.get(node.output[0])
    if dst is None and node.input[1] in c.consts:
        target = [int(d) for d in c.consts[node.input[1]]]
        if src is not None:
            dst = list(np.empty(src, dtype=np.int8).reshape(
                [s if t == 0 else t for s, t in zip(src + [0] * len(target), target,
                                                    strict=False)]).shape)
    if dst is None or src is None:
        raise UnsupportedModelError(f"ONNX Reshape node {node.name!r}: its output shape "
                                    "cannot be inferred")
    if len(src) > 2 and len(dst) == 2 and src[0] == dst[0]:
        return c.graph.call_function(torch.flatten, (x, 1))
    if src[0] == dst[0]:
        return c.graph.call_function(reshape_keep_batch, (x, list(dst[1:])))
    return c.graph.call_function(torch.reshape, (x, tuple(dst)))


def _binary(fn: Callable[..., Any]) -> Callable[[_Converter, onnx.NodeProto], fx.Node]:
    def convert(c: _Converter, node: onnx.NodeProto) -> fx.Node:
        return c.graph.call_function(fn, (c.value(node.input[0]), c.value(node.input[1])))
    return convert


def _unary_module(factory: Callable[[dict[str, Any]], nn.Module]
                  ) -> Callable[[_Converter, onnx.NodeProto], fx.Node]:
    def convert(c: _Converter, node: onnx.NodeProto) -> fx.Node:
        return c.module(node, factory(_attrs(node)), c.value(node.input[0]))
    return convert


def _clip(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    attrs = _attrs(node)
    low_const = c.const(node, 1, "minimum")
    high_const = c.const(node, 2, "maximum")
    low = float(low_const) if low_const is not None else float(attrs.get("min", -np.inf))
    high = float(high_const) if high_const is not None else float(attrs.get("max", np.inf))
    if low == 0.0 and high == 6.0:
        return c.module(node, nn.ReLU6(), c.value(node.input[0]))
    return c.graph.call_function(torch.clamp, (c.value(node.input[0]), low, high))


def _softmax(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    axis = int(_attrs(node).get("axis", -1))
    return c.graph.call_function(torch.softmax, (c.value(node.input[0]), axis))


def _concat(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    return c.graph.call_function(torch.cat, ([c.value(i) for i in node.input],
                                             int(_attrs(node)["axis"])))


def _transpose(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    perm = _attrs(node).get("perm")
    rank = c.rank(node.input[0])
    if perm is None:
        if rank is None:
            raise UnsupportedModelError(f"ONNX Transpose node {node.name!r}: unknown rank")
        perm = list(reversed(range(rank)))
    return c.graph.call_function(torch.permute, (c.value(node.input[0]), list(perm)))


def _axes(c: _Converter, node: onnx.NodeProto) -> list[int] | None:
    axes = _attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = c.const(node, 1, "axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _reduce_mean(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    axes = _axes(c, node)
    keep = bool(_attrs(node).get("keepdims", 1))
    x = c.value(node.input[0])
    if axes is None:
        return c.graph.call_function(torch.mean, (x,))
    return c.graph.call_function(torch.mean, (x, axes), {"keepdim": keep})


def _squeeze(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    axes = _axes(c, node)
    x = c.value(node.input[0])
    if axes is None:
        return c.graph.call_function(torch.squeeze, (x,))
    return c.graph.call_function(torch.squeeze, (x, tuple(axes)))


def _unsqueeze(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    x = c.value(node.input[0])
    for axis in sorted(_axes(c, node) or []):
        x = c.graph.call_function(torch.unsqueeze, (x, axis))
    return x


def _identity(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    return c.value(node.input[0])


def _fake_quantize(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    scale = c.const(node, 1, "scale")
    zero = c.const(node, 2, "zero point")
    zero = np.zeros((), dtype=np.uint8) if zero is None else zero
    if scale.size != 1:
        raise UnsupportedModelError(f"ONNX QuantizeLinear node {node.name!r} quantizes "
                                    "activations per channel")
    info = np.iinfo(zero.dtype)
    c.quantized.add(node.output[0])
    return c.graph.call_function(torch.fake_quantize_per_tensor_affine, (
        c.value(node.input[0]), float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]),
        int(info.min), int(info.max)))


def _dequantize(c: _Converter, node: onnx.NodeProto) -> fx.Node:
    if node.input[0] not in c.quantized:
        raise UnsupportedModelError(f"ONNX DequantizeLinear node {node.name!r} reads an "
                                    "integer tensor that is not a quantized activation")
    return c.value(node.input[0])


def _fold_dequantize(c: _Converter, node: onnx.NodeProto) -> np.ndarray:
    x = c.consts[node.input[0]].astype(np.float32)
    scale = c.consts[node.input[1]].astype(np.float32)
    zero = c.consts[node.input[2]].astype(np.float32) if len(node.input) > 2 and \
        node.input[2] else np.zeros_like(scale)
    if scale.ndim == 1 and scale.size > 1:
        axis = int(_attrs(node).get("axis", 1)) % x.ndim
        view = [1] * x.ndim
        view[axis] = -1
        scale, zero = scale.reshape(view), zero.reshape(view)
    return (x - zero) * scale


def _fold_quantize(c: _Converter, node: onnx.NodeProto) -> np.ndarray:
    x = c.consts[node.input[0]].astype(np.float32)
    scale = c.consts[node.input[1]].astype(np.float32)
    zero = c.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else \
        np.zeros_like(scale, dtype=np.uint8)
    if scale.ndim == 1 and scale.size > 1:
        axis = int(_attrs(node).get("axis", 1)) % x.ndim
        view = [1] * x.ndim
        view[axis] = -1
        scale, zero = scale.reshape(view), zero.reshape(view)
    info = np.iinfo(zero.dtype)
    q = np.clip(np.rint(x / scale) + zero.astype(np.float32), info.min, info.max)
    return q.astype(zero.dtype)


def _fold_identity(c: _Converter, node: onnx.NodeProto) -> np.ndarray:
    return c.consts[node.input[0]]


def _fold_cast(c: _Converter, node: onnx.NodeProto) -> np.ndarray:
    to = onnx.helper.tensor_dtype_to_np_dtype(int(_attrs(node)["to"]))
    return c.consts[node.input[0]].astype(to)


_FOLDABLE: dict[str, Callable[[_Converter, onnx.NodeProto], np.ndarray]] = {
    "DequantizeLinear": _fold_dequantize,
    "QuantizeLinear": _fold_quantize,
    "Identity": _fold_identity,
    "Cast": _fold_cast,
}

_HANDLERS: dict[str, Callable[[_Converter, onnx.NodeProto], fx.Node]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Relu": _unary_module(lambda a: nn.ReLU()),
    "LeakyRelu": _unary_module(lambda a: nn.LeakyReLU(float(a.get("alpha", 0.01)))),
    "Sigmoid": _unary_module(lambda a: nn.Sigmoid()),
    "Tanh": _unary_module(lambda a: nn.Tanh()),
    "HardSwish": _unary_module(lambda a: nn.Hardswish()),
    "Elu": _unary_module(lambda a: nn.ELU(float(a.get("alpha", 1.0)))),
    "Gelu": _unary_module(lambda a: nn.GELU()),
    "Clip": _clip,
    "Softmax": _softmax,
    "Concat": _concat,
    "Transpose": _transpose,
    "ReduceMean": _reduce_mean,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": _identity,
    "Dropout": _identity,
    # Activation Q/DQ pairs of QDQ graphs become fake quantization (trainable, same values).
    "QuantizeLinear": _fake_quantize,
    "DequantizeLinear": _dequantize,
}

#: ONNX operators :func:`onnx_to_torch` converts.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_HANDLERS))


def onnx_to_torch(path: Path) -> fx.GraphModule:
    """A trainable module computing the same function as the ONNX model at ``path``.

    Raises:
        UnsupportedModelError: an operator outside :data:`SUPPORTED_OPS`, or a layer
            whose weights are computed rather than stored.
    """
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise UnsupportedModelError(f"cannot read {Path(path).name} as ONNX: {exc}") from exc
    module = _Converter(model).run()
    module.eval()
    return module
