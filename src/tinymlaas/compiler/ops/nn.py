"""Convolution, matrix products, pooling and batch normalization."""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

import numpy as np
import onnx

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
from tinymlaas.compiler.quant import quantize_multipliers
from tinymlaas.compiler.values import Act, Const, QAct, QConst

__all__ = ["Window", "window"]

_INT32 = np.iinfo(np.int32)


@dataclass
class Window:
    """2-D sliding-window geometry (1-D windows use H = KH = 1)."""

    H: int
    W: int
    OH: int
    OW: int
    KH: int
    KW: int
    SH: int
    SW: int
    PT: int
    PL: int
    PB: int
    PR: int
    DH: int
    DW: int

    def args(self, *, ends: bool = False) -> list[int]:
        head = [self.H, self.W, self.OH, self.OW, self.KH, self.KW, self.SH, self.SW,
                self.PT, self.PL]
        return [*head, self.PB, self.PR, self.DH, self.DW] if ends else [*head, self.DH, self.DW]


def window(
    lw: Lowering,
    node: onnx.NodeProto,
    in_shape: tuple[int, ...],
    kernel: list[int],
    out_shape: tuple[int, ...],
) -> Window:
    """Resolve strides, dilations and (auto) padding of a Conv or pooling node."""
    attrs = attributes(node)
    spatial = len(in_shape) - 2
    if spatial not in (1, 2):
        raise lw.fail(f"{spatial}-D windows are not supported (1-D and 2-D are)")
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    auto_pad = str(attrs.get("auto_pad", "NOTSET"))
    ins, outs = list(in_shape[2:]), list(out_shape[2:])
    if auto_pad == "NOTSET":
        pads = list(attrs.get("pads", [0] * 2 * spatial))
    elif auto_pad == "VALID":
        pads = [0] * 2 * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(spatial):
            total = max(0, (outs[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - ins[i])
            small = total // 2
            begin = small if auto_pad == "SAME_UPPER" else total - small
            begins.append(begin)
            ends.append(total - begin)
        pads = begins + ends
    else:
        raise lw.fail(f"auto_pad={auto_pad} is not supported")
    if spatial == 1:
        return Window(1, ins[0], 1, outs[0], 1, kernel[0], 1, strides[0], 0, pads[0], 0,
                      pads[1], 1, dilations[0])
    return Window(ins[0], ins[1], outs[0], outs[1], kernel[0], kernel[1], strides[0],
                  strides[1], pads[0], pads[1], pads[2], pads[3], dilations[0], dilations[1])


def _requant(real: np.ndarray) -> tuple[CArray, CArray]:
    mult, shift = quantize_multipliers(real)
    return CArray(mult), CArray(shift)


def _int_bias(bias: np.ndarray | None, in_scale: float, w_scales: np.ndarray) -> np.ndarray:
    if bias is None:
        bias = np.zeros(w_scales.shape, dtype=np.float64)
    q = np.rint(bias.astype(np.float64) / (np.float64(in_scale) * w_scales))
    return np.clip(q, _INT32.min, _INT32.max).astype(np.int32)


def _symmetric_int8(value: object) -> bool:
    return (
        isinstance(value, QConst)
        and value.q.dtype == np.int8
        and not np.any(value.zero_point)
    )


def _emit_float_tail(lw: Lowering, out: Tensor, node: onnx.NodeProto, tail_output: str,
                     tail_nodes: list[onnx.NodeProto]) -> None:
    lw.consume(tail_nodes)
    lw.set(tail_output, Act(out))


@register("Conv")
def conv(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    x_shape = lw.shape_of(node.input[0])
    w_shape = lw.shape_of(node.input[1])
    y_shape = lw.out_shape(node.output[0])
    kernel = list(attrs.get("kernel_shape", w_shape[2:]))
    win = window(lw, node, x_shape, kernel, y_shape)
    group = int(attrs.get("group", 1))
    n, c, m = x_shape[0], x_shape[1], w_shape[0]
    macs = prod(y_shape) * prod(w_shape[1:])
    geometry = [n, c, win.H, win.W, m, win.OH, win.OW, win.KH, win.KW, win.SH, win.SW,
                win.PT, win.PL, win.DH, win.DW, group]
    x_value, w_value = lw.value(node.input[0]), lw.value(node.input[1])
    has_bias = lw.has(node, 2)
    if (
        isinstance(x_value, QAct)
        and _symmetric_int8(w_value)
        and (not has_bias or lw.const64(node.input[2]) is not None)
    ):
        assert isinstance(w_value, QConst)
        w_scales = w_value.per_channel(m, 0)
        tail = lw.match_tail(node)
        if w_scales is not None and tail is not None:
            bias = lw.const64(node.input[2]) if has_bias else None
            q_bias = _int_bias(bias, x_value.scale, w_scales)
            mult, shift = _requant(np.float64(x_value.scale) * w_scales / np.float64(tail.scale))
            low, high = tail.int_bounds()
            head: list[Tensor] = [x_value.tensor, lw.const_tensor(w_value.q),
                                  lw.const_tensor(q_bias)]
            if _fused_residual(lw, node, tail, y_shape, head, geometry,
                               [x_value.zero_point, tail.zero_point, mult, shift, low, high],
                               macs):
                return
            out = lw.new(y_shape, tail.dtype)
            lw.emit(
                f"tm_qconv2d_{type_code(x_value.tensor.dtype)}{type_code(tail.dtype)}",
                [x_value.tensor, lw.const_tensor(w_value.q), lw.const_tensor(q_bias), out,
                 *geometry, x_value.zero_point, tail.zero_point, mult, shift, low, high],
                [out], macs=macs, nodes=tail.nodes,
            )
            lw.consume(tail.nodes)
            lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))
            return
    x = lw.as_float(node.input[0])
    w = lw.as_float(node.input[1])
    b = lw.as_float(node.input[2]) if has_bias else None
    if _fused_float_residual(lw, node, y_shape, [x, w, b], geometry, macs):
        return
    ftail = lw.match_float_tail(node)
    out = lw.new(y_shape, FLOAT)
    lw.emit("tm_conv2d_f32", [x, w, b, out, *geometry, ftail.low, ftail.high], [out],
            macs=macs, nodes=ftail.nodes)
    _emit_float_tail(lw, out, node, ftail.output, ftail.nodes)


def _residual_add(lw: Lowering, name: str) -> tuple[onnx.NodeProto, str] | None:
    """The ``Add`` that ``name`` feeds alone, and the Add's other input."""
    if not lw.fuse_residual:
        return None
    found = lw.sole_consumer(name)
    if not found or found[1].op_type != "Add" or len(found[1].input) != 2:
        return None
    add = found[1]
    other = add.input[1] if add.input[0] == name else add.input[0]
    return (add, other) if other != name else None


def _fused_residual(lw: Lowering, node: onnx.NodeProto, tail: Tail, y_shape: tuple[int, ...],
                    head: list[Tensor], geometry: list[int], conv_args: list[object],
                    macs: int) -> bool:
    """Conv -> Q -> DQ -> Add(residual) -> [Relu] -> Q as one kernel (TFLite arithmetic)."""
    found = lw.sole_consumer(tail.output)
    if not found or found[1].op_type != "DequantizeLinear":
        return False
    dq = found[1]
    if lw.quant_params(dq) != (tail.scale, tail.zero_point, tail.dtype):
        return False
    match = _residual_add(lw, dq.output[0])
    if match is None:
        return False
    add, other = match
    residual = lw.peek_qact(other)
    if (residual is None or residual.tensor.shape != y_shape
            or residual.tensor.dtype != tail.dtype):
        return False
    add_tail = lw.match_tail(add)
    if add_tail is None or add_tail.dtype != tail.dtype:
        return False
    from tinymlaas.compiler.quant import quantize_multiplier

    twice_max = 2.0 * max(tail.scale, residual.scale)
    ma, sha = quantize_multiplier(tail.scale / twice_max)
    mb, shb = quantize_multiplier(residual.scale / twice_max)
    my, shy = quantize_multiplier(twice_max / ((1 << 20) * add_tail.scale))
    low, high = add_tail.int_bounds()
    out = lw.new(y_shape, tail.dtype)
    x = head[0]
    assert isinstance(x, Tensor)
    inplace = [(out, residual.tensor)] if residual.tensor.buffer is not x.buffer else []
    nodes = [*tail.nodes, dq, add, *add_tail.nodes]
    lw.emit(
        f"tm_qconv2d_add_{type_code(x.dtype)}{type_code(tail.dtype)}",
        [*head, out, *geometry, *conv_args, residual.tensor, residual.zero_point,
         add_tail.zero_point, ma, sha, mb, shb, my, shy, low, high],
        [out], macs=macs, nodes=nodes, inplace=inplace,
    )
    lw.consume(nodes)
    lw.set(add_tail.output, Act(out, qparams=(add_tail.scale, add_tail.zero_point)))
    return True


def _fused_float_residual(lw: Lowering, node: onnx.NodeProto, y_shape: tuple[int, ...],
                          head: list[Tensor | None], geometry: list[int], macs: int) -> bool:
    """Conv -> Add(residual) -> [Relu|Clip] as one float kernel."""
    match = _residual_add(lw, node.output[0])
    if match is None:
        return False
    add, other = match
    value = lw.values.get(other)
    if not isinstance(value, Act) or value.tensor.dtype != FLOAT or value.tensor.shape != y_shape:
        return False
    tail = lw.match_float_tail(add)
    if tail.bias is not None:
        return False
    out = lw.new(y_shape, FLOAT)
    x = head[0]
    assert isinstance(x, Tensor)
    residual = value.tensor
    inplace = [(out, residual)] if residual.buffer is not x.buffer else []
    nodes = [add, *tail.nodes]
    lw.emit("tm_conv2d_add_f32", [*head, out, *geometry, residual, tail.low, tail.high],
            [out], macs=macs, nodes=nodes, inplace=inplace)
    lw.consume(nodes)
    lw.set(tail.output, Act(out))
    return True


def _fully_connected(
    lw: Lowering,
    node: onnx.NodeProto,
    a: QAct,
    w_nk: np.ndarray,
    w_scales: np.ndarray,
    bias: np.ndarray | None,
    tail: Tail,
    rows: int,
    out_shape: tuple[int, ...],
) -> None:
    n_out, k = w_nk.shape
    if bias is not None and tail.bias is not None:
        bias = bias + tail.bias
    elif tail.bias is not None:
        bias = tail.bias
    q_bias = _int_bias(bias, a.scale, w_scales)
    # sum((a - az) * w) = sum(a * w) - az * sum(w): fold the input zero point into the bias.
    folded = q_bias.astype(np.int64) - a.zero_point * w_nk.astype(np.int64).sum(axis=1)
    q_bias = np.clip(folded, _INT32.min, _INT32.max).astype(np.int32)
    mult, shift = _requant(np.float64(a.scale) * w_scales / np.float64(tail.scale))
    out = lw.new(out_shape, tail.dtype)
    low, high = tail.int_bounds()
    lw.emit(
        f"tm_qgemm_{type_code(a.tensor.dtype)}{type_code(tail.dtype)}",
        [a.tensor, lw.const_tensor(np.ascontiguousarray(w_nk)), lw.const_tensor(q_bias), out,
         rows, k, n_out, 0, tail.zero_point, mult, shift, low, high],
        [out], macs=rows * k * n_out, nodes=tail.nodes,
    )
    lw.consume(tail.nodes)
    lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))


@register("Gemm")
def gemm(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))
    trans_a = int(attrs.get("transA", 0))
    trans_b = int(attrs.get("transB", 0))
    a_shape, b_shape = lw.shape_of(node.input[0]), lw.shape_of(node.input[1])
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise lw.fail("Gemm inputs must be 2-D")
    m = a_shape[1] if trans_a else a_shape[0]
    k = a_shape[0] if trans_a else a_shape[1]
    n = b_shape[0] if trans_b else b_shape[1]
    y_shape = (m, n)
    c_const = lw.const64(node.input[2]) if lw.has(node, 2) else None
    a_value, b_value = lw.value(node.input[0]), lw.value(node.input[1])
    if (
        isinstance(a_value, QAct)
        and not trans_a
        and _symmetric_int8(b_value)
        and (not lw.has(node, 2) or (c_const is not None and c_const.size in (1, n)
                                     and c_const.shape[-1:] in ((1,), (n,), ())))
    ):
        assert isinstance(b_value, QConst)
        w_scales = b_value.per_channel(n, 0 if trans_b else 1)
        tail = lw.match_tail(node)
        if w_scales is not None and tail is not None:
            w_nk = b_value.q if trans_b else b_value.q.T
            bias = None
            if c_const is not None:
                bias = np.broadcast_to(c_const.reshape(-1), (n,)) * beta
            _fully_connected(lw, node, a_value, w_nk, w_scales * alpha, bias, tail, m, y_shape)
            return
    a = lw.as_float(node.input[0])
    b_const = lw.const(node.input[1])
    if b_const is not None:
        bt = (b_const if trans_b else b_const.T).astype(np.float32) * np.float32(alpha)
        b = lw.const_tensor(np.ascontiguousarray(bt))
        tb, alpha = 1, 1.0
    else:
        b = lw.as_float(node.input[1])
        tb = trans_b
    bias_mode, bias_tensor, runtime_c = 0, None, None
    if lw.has(node, 2):
        if c_const is not None:
            full = np.broadcast_to((c_const * beta).astype(np.float32), y_shape)
            if c_const.ndim == 0 or c_const.shape[0] == 1 or c_const.ndim == 1:
                bias_mode, bias_tensor = 1, lw.const_tensor(np.ascontiguousarray(full[0]))
            else:
                bias_mode, bias_tensor = 2, lw.const_tensor(np.ascontiguousarray(full))
        else:
            runtime_c = node.input[2]
    ftail = lw.match_float_tail(node) if runtime_c is None else None
    low, high = (ftail.low, ftail.high) if ftail else (-np.inf, np.inf)
    out = lw.new(y_shape, FLOAT)
    lw.emit("tm_gemm_f32",
            [a, b, bias_tensor, out, m, k, n, trans_a, tb, alpha, bias_mode, low, high],
            [out], macs=m * n * k, nodes=ftail.nodes if ftail else [])
    if ftail:
        _emit_float_tail(lw, out, node, ftail.output, ftail.nodes)
        return
    assert runtime_c is not None
    c = lw.as_float(runtime_c)
    if beta != 1.0:
        scaled = lw.new(c.shape, FLOAT)
        from tinymlaas.compiler.ops.elementwise import emit_binary

        emit_binary(lw, "mul", c, lw.const_tensor(np.array(beta, np.float32)), scaled)
        c = scaled
    from tinymlaas.compiler.ops.elementwise import emit_binary

    result = lw.new(y_shape, FLOAT)
    emit_binary(lw, "add", out, c, result)
    lw.set(node.output[0], Act(result))


@register("MatMul")
def matmul(lw: Lowering, node: onnx.NodeProto) -> None:
    a_shape, b_shape = lw.shape_of(node.input[0]), lw.shape_of(node.input[1])
    y_shape = lw.out_shape(node.output[0])
    a_value, b_value = lw.value(node.input[0]), lw.value(node.input[1])
    if len(b_shape) == 2 and len(a_shape) >= 1:
        k, n = b_shape
        rows = prod(a_shape[:-1]) if len(a_shape) > 1 else 1
        if isinstance(a_value, QAct) and _symmetric_int8(b_value):
            assert isinstance(b_value, QConst)
            w_scales = b_value.per_channel(n, 1)
            tail = lw.match_tail(node, bias_channels=n)
            if w_scales is not None and tail is not None:
                _fully_connected(lw, node, a_value, b_value.q.T, w_scales, None, tail, rows,
                                 y_shape)
                return
        b_const = lw.const(node.input[1])
        if b_const is not None:
            a = lw.as_float(node.input[0])
            ftail = lw.match_float_tail(node, bias_channels=n)
            bias = lw.const_tensor(ftail.bias) if ftail.bias is not None else None
            out = lw.new(y_shape, FLOAT)
            bt = np.ascontiguousarray(b_const.astype(np.float32).T)
            lw.emit("tm_gemm_f32", [a, lw.const_tensor(bt), bias, out, rows, k, n, 0, 1, 1.0,
                                    1 if bias is not None else 0, ftail.low, ftail.high],
                    [out], macs=rows * k * n, nodes=ftail.nodes)
            _emit_float_tail(lw, out, node, ftail.output, ftail.nodes)
            return
    a = lw.as_float(node.input[0])
    b = lw.as_float(node.input[1])
    a2 = a_shape if len(a_shape) > 1 else (1, a_shape[0])
    b2 = b_shape if len(b_shape) > 1 else (b_shape[0], 1)
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    count = prod(batch) if batch else 1
    a_index = np.broadcast_to(np.arange(prod(a2[:-2]) or 1).reshape(a2[:-2] or (1,)),
                              batch or (1,)).ravel()
    b_index = np.broadcast_to(np.arange(prod(b2[:-2]) or 1).reshape(b2[:-2] or (1,)),
                              batch or (1,)).ravel()
    out = lw.new(y_shape, FLOAT)
    lw.emit(
        "tm_matmul_f32",
        [a, b, out, count, CArray((a_index * m * k).astype(np.int32)),
         CArray((b_index * k * n).astype(np.int32)), m, k, n],
        [out], macs=count * m * k * n,
    )
    lw.set(node.output[0], Act(out))


def _pool_setup(lw: Lowering, node: onnx.NodeProto) -> tuple[tuple[int, ...], tuple[int, ...],
                                                            Window]:
    attrs = attributes(node)
    x_shape = lw.shape_of(node.input[0])
    y_shape = lw.out_shape(node.output[0])
    if int(attrs.get("storage_order", 0)):
        raise lw.fail("storage_order=1 is not supported")
    if len(node.output) > 1 and node.output[1]:
        raise lw.fail("the Indices output is not supported")
    kernel = list(attrs["kernel_shape"])
    return x_shape, y_shape, window(lw, node, x_shape, kernel, y_shape)


@register("MaxPool")
def maxpool(lw: Lowering, node: onnx.NodeProto) -> None:
    x_shape, y_shape, win = _pool_setup(lw, node)
    value = lw.value(node.input[0])
    planes = x_shape[0] * x_shape[1]
    if isinstance(value, QAct | Act) and value.tensor.dtype in (*QUANT_TYPES, FLOAT):
        x = value.tensor
    else:
        x = lw.as_float(node.input[0])
    out = lw.new(y_shape, x.dtype)
    lowest: float | int = -np.inf if x.dtype == FLOAT else int(np.iinfo(x.dtype).min)
    lw.emit(f"tm_maxpool_{type_code(x.dtype)}", [x, out, planes, *win.args(), lowest], [out])
    if isinstance(value, QAct):
        lw.set(node.output[0], QAct(out, value.scale, value.zero_point))
    else:
        lw.set(node.output[0], Act(out, qparams=getattr(value, "qparams", None)))


def _qavgpool(lw: Lowering, node: onnx.NodeProto, value: QAct, planes: int, geometry: list[int],
              include_pad: int, y_shape: tuple[int, ...], tail: Tail) -> None:
    same = (
        np.float32(value.scale) == np.float32(tail.scale)
        and value.zero_point == tail.zero_point
        and not include_pad
    )
    mult, shift = quantize_multipliers(np.array([value.scale / (tail.scale * 256.0)]))
    out = lw.new(y_shape, tail.dtype)
    low, high = tail.int_bounds()
    lw.emit(
        f"tm_qavgpool_{type_code(value.tensor.dtype)}{type_code(tail.dtype)}",
        [value.tensor, out, planes, *geometry, include_pad, value.zero_point, tail.zero_point,
         int(same), int(mult[0]), int(shift[0]), low, high],
        [out], nodes=tail.nodes,
    )
    lw.consume(tail.nodes)
    lw.set(tail.output, Act(out, qparams=(tail.scale, tail.zero_point)))


@register("AveragePool")
def avgpool(lw: Lowering, node: onnx.NodeProto) -> None:
    x_shape, y_shape, win = _pool_setup(lw, node)
    include_pad = int(attributes(node).get("count_include_pad", 0))
    planes = x_shape[0] * x_shape[1]
    value = lw.value(node.input[0])
    if isinstance(value, QAct):
        tail = lw.match_tail(node)
        if tail is not None:
            _qavgpool(lw, node, value, planes, win.args(ends=True), include_pad, y_shape, tail)
            return
    x = lw.as_float(node.input[0])
    out = lw.new(y_shape, FLOAT)
    lw.emit("tm_avgpool_f32", [x, out, planes, *win.args(ends=True), include_pad], [out])
    lw.set(node.output[0], Act(out))


@register("GlobalAveragePool")
def global_avgpool(lw: Lowering, node: onnx.NodeProto) -> None:
    x_shape = lw.shape_of(node.input[0])
    y_shape = lw.out_shape(node.output[0])
    planes, hw = x_shape[0] * x_shape[1], prod(x_shape[2:])
    value = lw.value(node.input[0])
    if isinstance(value, QAct):
        tail = lw.match_tail(node)
        if tail is not None:
            geometry = [1, hw, 1, 1, 1, hw, 1, 1, 0, 0, 0, 0, 1, 1]
            _qavgpool(lw, node, value, planes, geometry, 0, y_shape, tail)
            return
    x = lw.as_float(node.input[0])
    out = lw.new(y_shape, FLOAT)
    lw.emit("tm_gap_f32", [x, out, planes, hw], [out])
    lw.set(node.output[0], Act(out))


def _reduce_axes(lw: Lowering, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """The sorted, non-negative axes a Reduce* node reduces; None means none (a no-op)."""
    attrs = attributes(node)
    if lw.opset >= 18 or lw.has(node, 1):
        axes: list[int] = []
        if lw.has(node, 1):
            given = lw.const(node.input[1])
            if given is None:
                raise lw.fail("the axes input must be a constant (it is computed at run time)")
            axes = [int(a) for a in np.asarray(given).ravel()]
        if not axes and int(attrs.get("noop_with_empty_axes", 0)):
            return None
    else:
        axes = [int(a) for a in attrs.get("axes", [])]
    if not axes:
        return list(range(rank))
    if any(not -rank <= a < rank for a in axes):
        raise lw.fail(f"axes {axes} are out of range for a rank-{rank} input")
    return sorted({a % rank for a in axes})


@register("ReduceMean")
def reduce_mean(lw: Lowering, node: onnx.NodeProto) -> None:
    """Mean over any axes. Each run of adjacent reduced axes becomes one pass over an
    (outer, reduced, inner) view, the last run first; over the trailing axes that is
    GlobalAveragePool's kernel, and ``DQ -> ReduceMean -> Q`` over the trailing axes is the
    integer average pool. ``keepdims`` only changes the shape, never the memory."""
    x_shape = lw.shape_of(node.input[0])
    y_shape = lw.out_shape(node.output[0])
    value = lw.value(node.input[0])
    axes = _reduce_axes(lw, node, len(x_shape))
    if axes is None or all(x_shape[a] == 1 for a in axes):
        if isinstance(value, Act | QAct):
            lw.set(node.output[0], replace(value, tensor=lw.view(value.tensor, y_shape)))
        else:
            lw.set(node.output[0], Act(lw.view(lw.as_float(node.input[0]), y_shape)))
        return
    if prod(x_shape) == 0:
        raise lw.fail("empty tensors are not supported")
    runs: list[list[int]] = []
    for a in axes:
        if x_shape[a] == 1:
            continue
        if runs and runs[-1][-1] == a - 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    if isinstance(value, QAct) and len(runs) == 1 and runs[0][-1] == len(x_shape) - 1:
        tail = lw.match_tail(node)
        if tail is not None:
            hw = prod(x_shape[runs[0][0]:])
            geometry = [1, hw, 1, 1, 1, hw, 1, 1, 0, 0, 0, 0, 1, 1]
            _qavgpool(lw, node, value, prod(x_shape[:runs[0][0]]), geometry, 0, y_shape, tail)
            return
    x = lw.as_float(node.input[0])
    shape = list(x_shape)
    for run in reversed(runs):
        outer, reduced = prod(shape[:run[0]]), prod(shape[run[0]:run[-1] + 1])
        inner = prod(shape[run[-1] + 1:])
        for a in run:
            shape[a] = 1
        out = lw.new(shape, FLOAT)
        if inner == 1:
            lw.emit("tm_gap_f32", [x, out, outer, reduced], [out])
        else:
            lw.emit("tm_reduce_mean_f32", [x, out, outer, reduced, inner], [out])
        x = out
    lw.set(node.output[0], Act(lw.view(x, y_shape)))


@register("BatchNormalization")
def batchnorm(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    if int(attrs.get("training_mode", 0)) or len([o for o in node.output if o]) > 1:
        raise lw.fail("training mode is not supported")
    x_shape = lw.shape_of(node.input[0])
    eps = float(attrs.get("epsilon", 1e-5))
    x = lw.as_float(node.input[0])
    params = [lw.as_float(node.input[i]) for i in range(1, 5)]
    out = lw.new(x_shape, FLOAT)
    inner = prod(x_shape[2:]) if len(x_shape) > 2 else 1
    lw.emit("tm_batchnorm_f32", [x, *params, out, x_shape[0], x_shape[1], inner, eps], [out],
            inplace=[(out, x)])
    lw.set(node.output[0], Act(out))


__all__ += ["avgpool", "batchnorm", "conv", "gemm", "global_avgpool", "matmul", "maxpool",
            "reduce_mean"]
_ = (Const,)
