"""QuantizeLinear and DequantizeLinear outside fused patterns."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx

from tinymlaas.compiler.ir import CArray, Tensor
from tinymlaas.compiler.lower import FLOAT, QUANT_TYPES, Lowering, attributes, register, type_code
from tinymlaas.compiler.quant import quantize_multiplier
from tinymlaas.compiler.values import Act, Const, QAct, QConst

__all__ = ["dequantize_linear", "quantize_linear"]

_Q_TYPES = (*QUANT_TYPES, np.dtype(np.int16), np.dtype(np.uint16))
_DQ_TYPES = (*_Q_TYPES, np.dtype(np.int32))


def _params(lw: Lowering, node: onnx.NodeProto, shape: tuple[int, ...],
            default_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale and zero point (same size), and the axis they run along (None: per tensor)."""
    attrs = attributes(node)
    if int(attrs.get("block_size", 0) or 0):  # type: ignore[call-overload]
        raise lw.fail("blocked quantization is not supported")
    scale_value = lw.values.get(node.input[1])
    if not isinstance(scale_value, Const):
        raise lw.fail("the scale must be a constant")
    scale = scale_value.array
    if scale.dtype != FLOAT:
        raise lw.fail(f"{scale.dtype} scales are not supported")
    if lw.has(node, 2):
        zp_value = lw.values.get(node.input[2])
        if not isinstance(zp_value, Const):
            raise lw.fail("the zero point must be a constant")
        zero_point = zp_value.array
    else:
        zero_point = np.zeros(scale.shape, dtype=default_dtype)
    if scale.size == 1:
        return scale.reshape(1), zero_point.reshape(1), None
    axis = int(attrs.get("axis", 1)) % len(shape)  # type: ignore[call-overload]
    return scale.reshape(-1), np.broadcast_to(zero_point.reshape(-1), (scale.size,)), axis


def _layout(shape: tuple[int, ...], axis: int | None) -> tuple[int, int, int]:
    if axis is None:
        return 1, 1, prod(shape)
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


@register("QuantizeLinear")
def quantize_linear(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    out_elem = int(attrs.get("output_dtype", 0) or 0)  # type: ignore[call-overload]
    default = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(out_elem)) if out_elem
               else np.dtype(np.uint8))
    shape = lw.shape_of(node.input[0])
    scale, zero_point, axis = _params(lw, node, shape, default)
    dtype = zero_point.dtype
    if dtype not in _Q_TYPES:
        raise lw.fail(f"quantizing to {dtype} is not supported")
    value = lw.value(node.input[0])
    if isinstance(value, QAct) and axis is None and dtype in QUANT_TYPES:
        s, z = float(scale[0]), int(zero_point[0])
        x = value.tensor
        if (np.float32(value.scale), value.zero_point, x.dtype) == (np.float32(s), z, dtype):
            lw.set(node.output[0], Act(x, qparams=(s, z), origin=value.origin))
            return
        mult, shift = quantize_multiplier(value.scale / s)
        out = lw.new(x.shape, dtype)
        info = np.iinfo(dtype)
        lw.emit(f"tm_requant_{type_code(x.dtype)}{type_code(dtype)}",
                [x, out, x.size, value.zero_point, z, mult, shift, int(info.min),
                 int(info.max)], [out])
        lw.set(node.output[0], Act(out, qparams=(s, z)))
        return
    x = lw.as_float(node.input[0])
    out = lw.new(shape, dtype)
    outer, channels, inner = _layout(shape, axis)
    lw.emit(f"tm_quantize_{type_code(dtype)}",
            [x, out, outer, channels, inner, CArray(scale.astype(np.float32)),
             CArray(zero_point.astype(np.int32))], [out])
    qparams = (float(scale[0]), int(zero_point[0])) if axis is None else None
    lw.set(node.output[0], Act(out, qparams=qparams))


@register("DequantizeLinear")
def dequantize_linear(lw: Lowering, node: onnx.NodeProto) -> None:
    value = lw.value(node.input[0])
    shape = lw.shape_of(node.input[0])
    if isinstance(value, Const):
        if value.array.dtype not in _DQ_TYPES:
            raise lw.fail(f"dequantizing {value.array.dtype} is not supported")
        scale, zero_point, axis = _params(lw, node, shape, value.array.dtype)
        lw.set(node.output[0], QConst(value.array, scale, zero_point.astype(value.array.dtype),
                                      axis))
        return
    if not isinstance(value, Act) or value.tensor.dtype not in _DQ_TYPES:
        raise lw.fail("the input must be integer data")
    x: Tensor = value.tensor
    scale, zero_point, axis = _params(lw, node, shape, x.dtype)
    if axis is None and x.dtype in QUANT_TYPES:
        s, z = float(scale[0]), int(zero_point[0])
        if value.origin is not None:
            spec = lw.input_specs[value.origin]
            if spec.scale is None:
                spec.scale, spec.zero_point = s, z
        lw.set(node.output[0], QAct(x, s, z, value.origin))
        return
    out = lw.new(shape, FLOAT)
    outer, channels, inner = _layout(shape, axis)
    lw.emit(f"tm_dequantize_{type_code(x.dtype)}",
            [x, out, outer, channels, inner, CArray(scale.astype(np.float32)),
             CArray(zero_point.astype(np.int32))], [out])
    lw.set(node.output[0], Act(out))
