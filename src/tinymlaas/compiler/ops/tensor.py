"""Layout operators: reshapes (free views), transposes, concatenation, constants."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
from onnx import numpy_helper

from tinymlaas.compiler.ir import At, CArray, Tensor
from tinymlaas.compiler.lower import FLOAT, Lowering, Tail, attributes, byte_code, register
from tinymlaas.compiler.quant import quantize_multiplier
from tinymlaas.compiler.values import Act, Const, QAct, QConst, Value

__all__ = ["concat", "constant", "reshape", "transpose"]


def _with_tensor(value: Value, tensor: Tensor) -> Value:
    if isinstance(value, QAct):
        return QAct(tensor, value.scale, value.zero_point, value.origin)
    if isinstance(value, Act):
        return Act(tensor, value.qparams, value.origin)
    raise TypeError(value)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def reshape(lw: Lowering, node: onnx.NodeProto) -> None:
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise lw.fail("the mask output is not supported")
    out_shape = lw.out_shape(node.output[0])
    value = lw.value(node.input[0])
    if isinstance(value, Const):
        lw.set(node.output[0], Const(value.array.reshape(out_shape)))
    elif isinstance(value, QConst):
        if value.axis is None or value.scale.size == 1:
            lw.set(node.output[0], QConst(value.q.reshape(out_shape), value.scale,
                                          value.zero_point, None))
        else:
            lw.set(node.output[0], Const(value.dequantize().reshape(out_shape)))
    else:
        if prod(out_shape) != value.tensor.size:
            raise lw.fail(f"reshape of {value.tensor.shape} to {out_shape}")
        lw.set(node.output[0], _with_tensor(value, lw.view(value.tensor, out_shape)))


@register("Transpose")
def transpose(lw: Lowering, node: onnx.NodeProto) -> None:
    value = lw.value(node.input[0])
    shape = lw.shape_of(node.input[0])
    perm = list(attributes(node).get("perm", list(range(len(shape)))[::-1]))
    if isinstance(value, Const | QConst):
        array = value.array if isinstance(value, Const) else value.dequantize()
        if isinstance(value, QConst) and (value.axis is None or value.scale.size == 1):
            lw.set(node.output[0], QConst(np.transpose(value.q, perm), value.scale,
                                          value.zero_point, None))
        else:
            lw.set(node.output[0], Const(np.ascontiguousarray(np.transpose(array, perm))))
        return
    x = value.tensor
    out_shape = tuple(shape[p] for p in perm)
    in_strides = [prod(shape[d + 1:]) for d in range(len(shape))]
    dims = [(out_shape[d], in_strides[perm[d]]) for d in range(len(shape)) if out_shape[d] != 1]
    merged: list[list[int]] = []
    for size, stride in dims:
        if merged and merged[-1][1] == stride * size:
            merged[-1] = [merged[-1][0] * size, stride]
        else:
            merged.append([size, stride])
    if len(merged) <= 1 and (not merged or merged[0][1] == 1):
        lw.set(node.output[0], _with_tensor(value, lw.view(x, out_shape)))
        return
    out = lw.new(out_shape, x.dtype)
    lw.emit(f"tm_transpose_{byte_code(x.dtype)}",
            [x, out, len(merged), CArray(np.array([m[0] for m in merged], np.int32)),
             CArray(np.array([m[1] for m in merged], np.int32))], [out])
    lw.set(node.output[0], _with_tensor(value, out))


def _copy_into(lw: Lowering, out: Tensor, parts: list[Tensor], axis: int) -> None:
    outer = prod(out.shape[:axis])
    inner = prod(out.shape[axis + 1:]) * out.dtype.itemsize
    dst_stride = out.shape[axis] * inner
    offset = 0
    for part in parts:
        row = part.shape[axis] * inner
        if row:
            target = At(out, offset)
            lw.emit("tm_copy2d", [target, part, outer, row, dst_stride, row], [target])
        offset += row


@register("Concat")
def concat(lw: Lowering, node: onnx.NodeProto) -> None:
    out_shape = lw.out_shape(node.output[0])
    axis = int(attributes(node)["axis"]) % len(out_shape)
    names = [n for n in node.input if n]
    values = [lw.value(n) for n in names]
    if all(isinstance(v, QAct) for v in values):
        params = {(v.scale, v.zero_point, v.tensor.dtype) for v in values}  # type: ignore[union-attr]
        if len(params) == 1:
            first = values[0]
            assert isinstance(first, QAct)
            out = lw.new(out_shape, first.tensor.dtype)
            _copy_into(lw, out, [v.tensor for v in values], axis)  # type: ignore[union-attr]
            lw.set(node.output[0], QAct(out, first.scale, first.zero_point))
            return
        tail = lw.match_tail(node, activation=False)
        if tail is not None:
            quantized = [v for v in values if isinstance(v, QAct)]
            _requantized_concat(lw, node, quantized, tail, out_shape, axis)
            return
    raw = [v for v in values if isinstance(v, Act) and v.tensor.dtype != FLOAT]
    if raw and len(raw) == len(values) and len({v.tensor.dtype for v in raw}) == 1:
        out = lw.new(out_shape, raw[0].tensor.dtype)
        _copy_into(lw, out, [v.tensor for v in raw], axis)
        lw.set(node.output[0], Act(out))
        return
    parts = [lw.as_float(n) for n in names]
    out = lw.new(out_shape, FLOAT)
    _copy_into(lw, out, parts, axis)
    lw.set(node.output[0], Act(out))


def _requantized_concat(lw: Lowering, node: onnx.NodeProto, values: list[QAct], tail: Tail,
                        out_shape: tuple[int, ...], axis: int) -> None:
    parts = []
    for value in values:
        x = value.tensor
        if (value.scale, value.zero_point, x.dtype) == (tail.scale, tail.zero_point, tail.dtype):
            parts.append(x)
            continue
        mult, shift = quantize_multiplier(value.scale / tail.scale)
        part = lw.new(x.shape, tail.dtype)
        info = np.iinfo(tail.dtype)
        code = f"{_code(x.dtype)}{_code(tail.dtype)}"
        lw.emit(f"tm_requant_{code}", [x, part, x.size, value.zero_point, tail.zero_point,
                                       mult, shift, int(info.min), int(info.max)], [part])
        parts.append(part)
    out = lw.new(out_shape, tail.dtype)
    _copy_into(lw, out, parts, axis)
    lw.consume(tail.nodes)
    lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))


def _code(dtype: np.dtype) -> str:
    from tinymlaas.compiler.lower import type_code

    return type_code(dtype)


@register("Constant")
def constant(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        array = numpy_helper.to_array(attrs["value"].t)
    elif "value_float" in attrs:
        array = np.array(attrs["value_float"].f, dtype=np.float32)
    elif "value_floats" in attrs:
        array = np.array(list(attrs["value_floats"].floats), dtype=np.float32)
    elif "value_int" in attrs:
        array = np.array(attrs["value_int"].i, dtype=np.int64)
    elif "value_ints" in attrs:
        array = np.array(list(attrs["value_ints"].ints), dtype=np.int64)
    else:
        raise lw.fail("only tensor, float(s) and int(s) constants are supported")
    lw.set(node.output[0], Const(array))
