"""QuantizeLinear and DequantizeLinear outside fused patterns."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class _Params:
    scale: CArray | Tensor
    zero_point: CArray | Tensor
    dtype: np.dtype
    axis: int | None
    constant: tuple[np.ndarray, np.ndarray] | None

    @property
    def per_tensor(self) -> tuple[float, int] | None:
        if self.constant is None or self.axis is not None:
            return None
        scale, zero_point = self.constant
        return float(scale.ravel()[0]), int(zero_point.ravel()[0])


def _params(lw: Lowering, node: onnx.NodeProto, shape: tuple[int, ...],
            default_dtype: np.dtype) -> _Params:
    attrs = attributes(node)
    if int(attrs.get("block_size", 0) or 0):
        raise lw.fail("blocked quantization is not supported")
    scale_value = lw.value(node.input[1])
    scale_shape = lw.shape_of(node.input[1])
    size = prod(scale_shape)
    axis = None if size == 1 else int(attrs.get("axis", 1)) % len(shape)
    if axis is not None and (len(scale_shape) != 1 or shape[axis] != size):
        raise lw.fail("the scale must be a scalar or one value per channel")
    if isinstance(scale_value, Const):
        if scale_value.array.dtype != FLOAT:
            raise lw.fail(f"{scale_value.array.dtype} scales are not supported")
        scale_arg: CArray | Tensor = CArray(scale_value.array.reshape(-1))
    else:
        scale_arg = lw.as_float(node.input[1])
    zp_array = None
    if lw.has(node, 2):
        zp_value = lw.value(node.input[2])
        if isinstance(zp_value, Const):
            zp_array = zp_value.array.reshape(-1)
            dtype = zp_array.dtype
            zp_arg: CArray | Tensor = CArray(zp_array)
        else:
            zp_arg = lw.raw(node.input[2])
            dtype = zp_arg.dtype
    else:
        dtype = default_dtype
        zp_array = np.zeros(size, dtype=dtype)
        zp_arg = CArray(zp_array)
    constant = None
    if isinstance(scale_value, Const) and zp_array is not None:
        constant = (scale_value.array.reshape(-1), np.broadcast_to(zp_array, (size,)))
    return _Params(scale_arg, zp_arg, np.dtype(dtype), axis, constant)


def _layout(shape: tuple[int, ...], axis: int | None) -> tuple[int, int, int]:
    if axis is None:
        return 1, 1, prod(shape)
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


@register("QuantizeLinear")
def quantize_linear(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    out_elem = int(attrs.get("output_dtype", 0) or 0)
    default = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(out_elem)) if out_elem
               else np.dtype(np.uint8))
    shape = lw.shape_of(node.input[0])
    params = _params(lw, node, shape, default)
    dtype = params.dtype
    if dtype not in _Q_TYPES:
        raise lw.fail(f"quantizing to {dtype} is not supported")
    value = lw.value(node.input[0])
    per_tensor = params.per_tensor
    if isinstance(value, QAct) and per_tensor is not None and dtype in QUANT_TYPES:
        s, z = per_tensor
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
    outer, channels, inner = _layout(shape, params.axis)
    lw.emit(f"tm_quantize_{type_code(dtype)}",
            [x, out, outer, channels, inner, params.scale, params.zero_point], [out])
    lw.set(node.output[0], Act(out, qparams=per_tensor))


@register("DequantizeLinear")
def dequantize_linear(lw: Lowering, node: onnx.NodeProto) -> None:
    value = lw.value(node.input[0])
    shape = lw.shape_of(node.input[0])
    if isinstance(value, Const | Act):
        dtype = value.array.dtype if isinstance(value, Const) else value.tensor.dtype
        if dtype not in _DQ_TYPES:
            raise lw.fail(f"dequantizing {dtype} is not supported")
    else:
        raise lw.fail("the input must be integer data")
    params = _params(lw, node, shape, dtype)
    if params.dtype != dtype:
        raise lw.fail("the zero point type differs from the data type")
    if isinstance(value, Const) and params.constant is not None:
        scale, zero_point = params.constant
        lw.set(node.output[0], QConst(value.array, scale, zero_point.astype(dtype), params.axis))
        return
    per_tensor = params.per_tensor
    if isinstance(value, Act) and per_tensor is not None and dtype in QUANT_TYPES:
        s, z = per_tensor
        if value.origin is not None:
            spec = lw.input_specs[value.origin]
            if spec.scale is None:
                spec.scale, spec.zero_point = s, z
        lw.set(node.output[0], QAct(value.tensor, s, z, value.origin))
        return
    x = lw.raw(node.input[0])
    out = lw.new(shape, FLOAT)
    outer, channels, inner = _layout(shape, params.axis)
    lw.emit(f"tm_dequantize_{type_code(dtype)}",
            [x, out, outer, channels, inner, params.scale, params.zero_point], [out])
    lw.set(node.output[0], Act(out))
