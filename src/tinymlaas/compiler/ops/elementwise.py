"""Elementwise operators: activations, arithmetic with broadcasting, softmax."""

from __future__ import annotations

import math
from math import prod

import numpy as np
import onnx

from tinymlaas.compiler.ckernels import UNARY_EXPR
from tinymlaas.compiler.ir import CArray, Tensor
from tinymlaas.compiler.lower import (
    FLOAT,
    QUANT_TYPES,
    Lowering,
    Tail,
    attributes,
    register,
    type_code,
)
from tinymlaas.compiler.quant import quantize_multiplier
from tinymlaas.compiler.values import Act, Const, QAct, QConst

__all__ = ["broadcast_plan", "emit_binary"]

_MAX_RANK = 8


def broadcast_plan(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[list[int], list[int], list[int]]:
    """Collapsed output shape and per-dimension element strides of ``a`` and ``b``.

    Broadcast dimensions get stride 0; neighbouring dimensions that both inputs traverse
    the same way are merged, so common cases become one or two dimensions.
    """
    rank = len(out_shape)

    def strides(shape: tuple[int, ...]) -> list[int]:
        padded = [1] * (rank - len(shape)) + list(shape)
        result, step = [0] * rank, 1
        for d in range(rank - 1, -1, -1):
            result[d] = step if padded[d] != 1 else 0
            step *= padded[d]
        return result

    sa, sb = strides(a_shape), strides(b_shape)
    dims = [(int(out_shape[d]), sa[d], sb[d]) for d in range(rank) if out_shape[d] != 1]
    merged: list[list[int]] = []
    for size, stride_a, stride_b in dims:
        if merged:
            prev = merged[-1]
            if prev[1] == stride_a * size and prev[2] == stride_b * size:
                prev[0] *= size
                prev[1], prev[2] = stride_a, stride_b
                continue
        merged.append([size, stride_a, stride_b])
    if not merged:
        merged = [[1, 0, 0]]
    return [m[0] for m in merged], [m[1] for m in merged], [m[2] for m in merged]


def emit_binary(lw: Lowering, op: str, a: Tensor, b: Tensor, out: Tensor) -> None:
    """Emit a float or same-typed integer binary kernel with broadcasting."""
    shape, sa, sb = broadcast_plan(a.shape, b.shape, out.shape)
    if len(shape) > _MAX_RANK:
        raise lw.fail(f"broadcasting over more than {_MAX_RANK} dimensions")
    inplace = [(out, t) for t in (a, b) if t.shape == out.shape and t.dtype == out.dtype]
    lw.emit(
        f"tm_binary_{op}_{type_code(out.dtype)}",
        [a, b, out, len(shape), CArray(np.array(shape, np.int32)),
         CArray(np.array(sa, np.int32)), CArray(np.array(sb, np.int32))],
        [out], inplace=inplace,
    )


def _quantized_operand(value: object) -> tuple[Tensor | np.ndarray, float, int] | None:
    if isinstance(value, QAct):
        return value.tensor, value.scale, value.zero_point
    if isinstance(value, QConst) and value.scale.size == 1 and value.q.dtype in QUANT_TYPES:
        return value.q, float(value.scale.ravel()[0]), int(value.zero_point.ravel()[0])
    return None


@register("Max", "Min", "Sum")
def variadic(lw: Lowering, node: onnx.NodeProto) -> None:
    names = [n for n in node.input if n]
    op = {"Max": "max", "Min": "min", "Sum": "add"}[node.op_type]
    if len(names) == 1:
        value = lw.value(names[0])
        tensor = lw.raw(names[0])
        out = lw.new(tensor.shape, tensor.dtype)
        lw.emit("tm_copy2d", [out, tensor, 1, tensor.nbytes, tensor.nbytes, tensor.nbytes], [out])
        lw.set(node.output[0], Act(out) if not isinstance(value, QAct) else
               QAct(out, value.scale, value.zero_point))
        return
    if len(names) == 2:
        binary(lw, node)
        return
    out_shape = lw.out_shape(node.output[0])
    integer = all(isinstance(lw.value(n), Act) and lw.raw(n).dtype.kind in "iu" for n in names)
    operands = [lw.raw(n) if integer else lw.as_float(n) for n in names]
    if integer and len({t.dtype for t in operands}) != 1:
        raise lw.fail("all inputs must have one type")
    acc = operands[0]
    for index, operand in enumerate(operands[1:], start=1):
        shape = out_shape if index == len(operands) - 1 else tuple(
            np.broadcast_shapes(acc.shape, operand.shape))
        result = lw.new(shape, acc.dtype)
        emit_binary(lw, op, acc, operand, result)
        acc = result
    lw.set(node.output[0], Act(acc))


@register("Add", "Mul", "Sub", "Div")
def binary(lw: Lowering, node: onnx.NodeProto) -> None:
    op = {"Max": "max", "Min": "min", "Sum": "add"}.get(node.op_type, node.op_type.lower())
    if len(node.input) != 2:
        raise lw.fail("only two inputs are supported")
    out_shape = lw.out_shape(node.output[0])
    if op in ("add", "mul"):
        left = _quantized_operand(lw.value(node.input[0]))
        right = _quantized_operand(lw.value(node.input[1]))
        if left and right and (isinstance(left[0], Tensor) or isinstance(right[0], Tensor)):
            tail = lw.match_tail(node)
            if tail is not None and _quantized_binary(lw, op, left, right, out_shape, tail):
                return
    a_value, b_value = lw.value(node.input[0]), lw.value(node.input[1])
    if (
        isinstance(a_value, Act) and isinstance(b_value, Act | Const)
        and a_value.tensor.dtype != FLOAT and a_value.tensor.dtype.kind in "iu"
    ):
        a, b = a_value.tensor, lw.raw(node.input[1])
        if a.dtype != b.dtype or op == "div":
            raise lw.fail(f"{op} on {a.dtype} and {b.dtype} is not supported")
        out = lw.new(out_shape, a.dtype)
    else:
        a, b = lw.as_float(node.input[0]), lw.as_float(node.input[1])
        out = lw.new(out_shape, FLOAT)
    emit_binary(lw, op, a, b, out)
    lw.set(node.output[0], Act(out))


def _quantized_binary(lw: Lowering, op: str, left: tuple, right: tuple,
                      out_shape: tuple[int, ...], tail: object) -> bool:
    from tinymlaas.compiler.lower import Tail

    assert isinstance(tail, Tail)
    tensors = []
    for data, *_ in (left, right):
        tensors.append(data if isinstance(data, Tensor) else lw.const_tensor(data))
    a, b = tensors
    if a.dtype != b.dtype:
        return False
    (_, sa, za), (_, sb, zb) = left, right
    sy = tail.scale
    if op == "add":
        twice_max = 2.0 * max(sa, sb)
        ma, sha = quantize_multiplier(sa / twice_max)
        mb, shb = quantize_multiplier(sb / twice_max)
        my, shy = quantize_multiplier(twice_max / ((1 << 20) * sy))
    else:
        ma = sha = mb = shb = 0
        my, shy = quantize_multiplier(sa * sb / sy)
    shape, stride_a, stride_b = broadcast_plan(a.shape, b.shape, out_shape)
    out = lw.new(out_shape, tail.dtype)
    low, high = tail.int_bounds()
    lw.emit(
        f"tm_q{op}_{type_code(a.dtype)}{type_code(tail.dtype)}",
        [a, b, out, len(shape), CArray(np.array(shape, np.int32)),
         CArray(np.array(stride_a, np.int32)), CArray(np.array(stride_b, np.int32)),
         za, zb, tail.zero_point, ma, sha, mb, shb, my, shy, low, high],
        [out], nodes=tail.nodes,
        inplace=[(out, t) for t in (a, b) if t.shape == out.shape and t.dtype == out.dtype],
    )
    lw.consume(tail.nodes)
    lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))
    return True


def _int_clip(lw: Lowering, node: onnx.NodeProto, tensor: Tensor, low: float, high: float,
              scale: float, zero_point: int) -> Tensor:
    info = np.iinfo(tensor.dtype)
    lo, hi = int(info.min), int(info.max)
    if np.isfinite(low):
        lo = max(lo, int(np.rint(np.float32(low) / np.float32(scale))) + zero_point)
    if np.isfinite(high):
        hi = min(hi, int(np.rint(np.float32(high) / np.float32(scale))) + zero_point)
    out = lw.new(tensor.shape, tensor.dtype)
    lw.emit(f"tm_clamp_{type_code(tensor.dtype)}", [tensor, out, tensor.size, lo, hi], [out],
            inplace=[(out, tensor)])
    return out


def _runtime_clip(lw: Lowering, node: onnx.NodeProto) -> None:
    value = lw.value(node.input[0])
    x = lw.as_float(node.input[0]) if isinstance(value, QAct) else lw.raw(node.input[0])
    if x.dtype not in (FLOAT, *QUANT_TYPES, np.dtype(np.int16), np.dtype(np.uint16),
                       np.dtype(np.int32), np.dtype(np.int64)):
        raise lw.fail(f"{x.dtype} data is not supported")
    bounds: list[Tensor | None] = []
    for index in (1, 2):
        if not lw.has(node, index):
            bounds.append(None)
            continue
        bound = lw.raw(node.input[index])
        if bound.dtype != x.dtype:
            raise lw.fail("Clip bounds must have the data's type")
        bounds.append(bound)
    out = lw.new(x.shape, x.dtype)
    lw.emit(f"tm_cliprt_{type_code(x.dtype)}", [x, *bounds, out, x.size], [out],
            inplace=[(out, x)])
    lw.set(node.output[0], Act(out))


@register("Relu", "Clip")
def relu_clip(lw: Lowering, node: onnx.NodeProto) -> None:
    bounds = lw._activation(node)
    if bounds is None:
        _runtime_clip(lw, node)
        return
    low, high = bounds
    value = lw.value(node.input[0])
    if isinstance(value, QAct):
        out = _int_clip(lw, node, value.tensor, low, high, value.scale, value.zero_point)
        lw.set(node.output[0], QAct(out, value.scale, value.zero_point))
        return
    if isinstance(value, Act) and value.tensor.dtype.kind in "iu":
        if value.tensor.dtype not in (*QUANT_TYPES, np.dtype(np.int16), np.dtype(np.uint16),
                                      np.dtype(np.int32)):
            raise lw.fail(f"{value.tensor.dtype} data is not supported")
        out = _int_clip(lw, node, value.tensor, low, high, 1.0, 0)
        lw.set(node.output[0], Act(out))
        return
    unary_float(lw, node, "relu" if node.op_type == "Relu" else "clip", low, high)


def unary_float(lw: Lowering, node: onnx.NodeProto, op: str, p0: float = 0.0,
                p1: float = 0.0) -> None:
    """Emit a float unary kernel (in place when the input dies here)."""
    x = lw.as_float(node.input[0])
    out = lw.new(x.shape, FLOAT)
    lw.emit(f"tm_unary_{op}_f32", [x, out, x.size, p0, p1], [out], inplace=[(out, x)])
    lw.set(node.output[0], Act(out))


_UNARY_PARAMS: dict[str, tuple[tuple[str, float], ...]] = {
    "LeakyRelu": (("alpha", 0.01),),
    "HardSigmoid": (("alpha", 0.2), ("beta", 0.5)),
    "Elu": (("alpha", 1.0),),
}
_UNARY_OPS = {
    "LeakyRelu": "leakyrelu", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs",
    "Neg": "neg", "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "Erf": "erf",
    "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Elu": "elu",
    "Softplus": "softplus", "Softsign": "softsign",
}
assert set(_UNARY_OPS.values()) <= set(UNARY_EXPR)


@register(*_UNARY_OPS)
def unary(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    params = [float(attrs.get(name, default)) for name, default in
              _UNARY_PARAMS.get(node.op_type, ())]
    unary_float(lw, node, _UNARY_OPS[node.op_type], *params)


def _lookup_table(x: QAct, func: object, scale: float, zero_point: int,
                  dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(x.tensor.dtype)
    q = np.arange(info.min, info.max + 1, dtype=np.int32)
    real = (q.astype(np.float32) - np.float32(x.zero_point)) * np.float32(x.scale)
    y = func(real.astype(np.float64)).astype(np.float32)  # type: ignore[operator]
    out = np.rint(y / np.float32(scale)) + zero_point
    limits = np.iinfo(dtype)
    return np.clip(out, limits.min, limits.max).astype(dtype)


@register("Sigmoid", "Tanh")
def sigmoid_tanh(lw: Lowering, node: onnx.NodeProto) -> None:
    func = np.tanh if node.op_type == "Tanh" else (lambda v: 1.0 / (1.0 + np.exp(-v)))
    value = lw.value(node.input[0])
    if isinstance(value, QAct):
        tail = lw.match_tail(node, activation=False)
        if tail is not None:
            table = _lookup_table(value, func, tail.scale, tail.zero_point, tail.dtype)
            out = lw.new(value.tensor.shape, tail.dtype)
            lw.emit(f"tm_lut_{type_code(value.tensor.dtype)}{type_code(tail.dtype)}",
                    [value.tensor, out, out.size, lw.const_tensor(table)], [out],
                    nodes=tail.nodes)
            lw.consume(tail.nodes)
            lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))
            return
    unary_float(lw, node, node.op_type.lower())


@register("Softmax")
def softmax(lw: Lowering, node: onnx.NodeProto) -> None:
    shape = lw.shape_of(node.input[0])
    rank = len(shape)
    default = -1 if lw.opset >= 13 else 1
    axis = int(attributes(node).get("axis", default)) % max(rank, 1)
    outer = prod(shape[:axis])
    if lw.opset >= 13:
        n, inner = shape[axis], prod(shape[axis + 1:])
    else:
        n, inner = prod(shape[axis:]), 1
    value = lw.value(node.input[0])
    if isinstance(value, QAct):
        tail = lw.match_tail(node, activation=False)
        if tail is not None and _tflite_softmax(lw, node, value, tail, outer, n, inner,
                                                shape):
            return
        if tail is not None:
            d = np.arange(256, dtype=np.float64)
            table = np.exp(-np.float64(value.scale) * d).astype(np.float32)
            out = lw.new(shape, tail.dtype)
            low, high = tail.int_bounds()
            lw.emit(
                f"tm_qsoftmax_{type_code(value.tensor.dtype)}{type_code(tail.dtype)}",
                [value.tensor, out, outer, n, inner, lw.const_tensor(table), tail.scale,
                 tail.zero_point, low, high],
                [out], nodes=tail.nodes,
            )
            lw.consume(tail.nodes)
            lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))
            return
    x = lw.as_float(node.input[0])
    out = lw.new(shape, FLOAT)
    lw.emit("tm_softmax_f32", [x, out, outer, n, inner], [out], inplace=[(out, x)])
    lw.set(node.output[0], Act(out))


#: TFLite's integer softmax: the output scale and the scaled difference's integer bits.
TFLITE_SOFTMAX_SCALE = 1.0 / 256.0
_SCALED_DIFF_BITS = 5


def tflite_softmax_params(input_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """TFLite's ``PreprocessSoftmaxScaling`` and ``CalculateInputRadius``: the Q31
    multiplier and left shift of ``beta * input_scale * 2**26``, and ``diff_min``."""
    real = min(beta * float(np.float32(input_scale)) * (1 << (31 - _SCALED_DIFF_BITS)),
               float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    radius = ((1 << _SCALED_DIFF_BITS) - 1) * (1 << (31 - _SCALED_DIFF_BITS)) / (1 << shift)
    return mult, shift, -math.floor(radius)


def _tflite_softmax(lw: Lowering, node: onnx.NodeProto, value: QAct, tail: Tail, outer: int,
                    n: int, inner: int, shape: tuple[int, ...]) -> bool:
    """``DQ -> Softmax -> Q`` with TFLite's output quantization (scale 1/256, zero point at
    the type's minimum) runs TFLite's integer arithmetic, so it matches TFLite Micro bit
    for bit. Returns False when the pattern does not apply."""
    x = value.tensor
    info = np.iinfo(tail.dtype)
    if (x.dtype not in QUANT_TYPES or np.float32(tail.scale) != np.float32(TFLITE_SOFTMAX_SCALE)
            or tail.zero_point != int(info.min)):
        return False
    mult, shift, diff_min = tflite_softmax_params(value.scale)
    if mult == 0 or shift < 0:
        return False
    out = lw.new(shape, tail.dtype)
    lw.emit(f"tm_qsoftmax_tfl_{type_code(x.dtype)}{type_code(tail.dtype)}",
            [x, out, outer, n, inner, mult, shift, diff_min, int(info.min), int(info.max)],
            [out], nodes=tail.nodes)
    lw.consume(tail.nodes)
    lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))
    return True


__all__ += ["binary", "relu_clip", "sigmoid_tanh", "softmax", "tflite_softmax_params", "unary",
            "unary_float"]
