"""Index-remapping operators: ``Pad`` (constant, edge, reflect, wrap) and nearest-neighbour
``Resize`` / ``Upsample``.

Both are separable: along each dimension every output index reads one input index (or,
for constant padding, the pad value). The compiler computes those per-dimension tables,
and one kernel (``tm_remap_*``) gathers the output. The data is copied as stored, so a
quantized input (``DequantizeLinear`` before, ``QuantizeLinear`` after) stays in int8 and
the result is exact; a constant pad value is quantized with the input's parameters.
"""

from __future__ import annotations

import numpy as np
import onnx

from tinymlaas.compiler.ir import CArray
from tinymlaas.compiler.lower import FLOAT, Lowering, attributes, register, type_code
from tinymlaas.compiler.values import Act, QAct

__all__ = ["pad", "resize"]

#: Dimensions the remap kernel handles.
MAX_RANK = 8


def _const_ints(lw: Lowering, node: onnx.NodeProto, index: int, what: str) -> list[int] | None:
    if not lw.has(node, index):
        return None
    value = lw.const(node.input[index])
    if value is None:
        raise lw.fail(f"the {what} input must be a constant (it is computed at run time)")
    return [int(v) for v in np.asarray(value).ravel()]


def _axes(lw: Lowering, node: onnx.NodeProto, index: int | None, rank: int) -> list[int]:
    """Axes from input ``index`` (opset 18 ``Pad``), else the ``axes`` attribute, else all."""
    axes = None if index is None else _const_ints(lw, node, index, "axes")
    if axes is None:
        axes = [int(a) for a in attributes(node).get("axes", [])] or list(range(rank))
    if any(not -rank <= a < rank for a in axes):
        raise lw.fail(f"axes {axes} are out of range for a rank-{rank} input")
    axes = [a % rank for a in axes]
    if len(set(axes)) != len(axes):
        raise lw.fail(f"axes {axes} repeat an axis")
    return axes


def _emit_remap(lw: Lowering, node: onnx.NodeProto, maps: list[np.ndarray],
                out_shape: tuple[int, ...], fill: float | None) -> None:
    """Gather ``out[o] = x[maps[0][o0], maps[1][o1], ...]`` (pad value where an index < 0)."""
    value = lw.value(node.input[0])
    shape = lw.shape_of(node.input[0])
    if len(shape) > MAX_RANK:
        raise lw.fail(f"rank {len(shape)} is above the supported {MAX_RANK}")
    if 0 in shape or 0 in out_shape:
        raise lw.fail("empty tensors are not supported")
    identity = tuple(out_shape) == tuple(shape) and all(
        np.array_equal(m, np.arange(len(m))) for m in maps)
    if isinstance(value, QAct):
        x = value.tensor
        info = np.iinfo(x.dtype)
        q = None if fill is None else int(np.clip(
            np.rint(np.float32(fill) / np.float32(value.scale)) + value.zero_point,
            info.min, info.max))
        table = None if q is None else CArray(np.array([q], x.dtype))
        result = lambda t: QAct(t, value.scale, value.zero_point)  # noqa: E731
    elif isinstance(value, Act) and value.tensor.dtype != FLOAT:
        x = value.tensor
        table = None if fill is None else CArray(np.array([fill]).astype(x.dtype))
        result = lambda t: Act(t)  # noqa: E731
    else:
        x = lw.as_float(node.input[0])
        table = None if fill is None else CArray(np.array([fill], np.float32))
        result = lambda t: Act(t)  # noqa: E731
    if identity:
        lw.set(node.output[0], result(lw.view(x, out_shape)))
        return
    out = lw.new(out_shape, x.dtype)
    strides = [int(np.prod(shape[d + 1:])) for d in range(len(shape))]
    lw.emit(f"tm_remap_{type_code(x.dtype)}",
            [x, out, len(shape), CArray(np.array(out_shape, np.int32)),
             CArray(np.array(strides, np.int32)),
             CArray(np.concatenate(maps).astype(np.int32)), table], [out])
    lw.set(node.output[0], result(out))


def _pad_map(n: int, begin: int, size: int, mode: str) -> np.ndarray:
    index = np.arange(size, dtype=np.int64) - begin
    if mode == "constant":
        return np.where((index >= 0) & (index < n), index, -1)
    if mode == "edge":
        return np.clip(index, 0, n - 1)
    if mode == "wrap":
        return np.mod(index, n)
    if n == 1:  # reflect of a single element
        return np.zeros(size, np.int64)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded < n, folded, period - folded)


@register("Pad")
def pad(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise lw.fail(f"mode {mode!r} is not supported")
    shape = lw.shape_of(node.input[0])
    rank = len(shape)
    fill = 0.0
    if lw.opset < 11:
        pads = [int(p) for p in attrs.get("pads", [])]
        fill = float(attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        given = _const_ints(lw, node, 1, "pads")
        if given is None:
            raise lw.fail("the pads input is missing")
        pads = given
        if lw.has(node, 2):
            value = lw.const(node.input[2])
            if value is None:
                raise lw.fail("the constant_value input must be a constant")
            fill = float(np.asarray(value).ravel()[0]) if np.asarray(value).size else 0.0
        axes = _axes(lw, node, 3, rank)
    if len(pads) != 2 * len(axes):
        raise lw.fail(f"{len(pads)} pads for {len(axes)} axes")
    begins, ends = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[k], pads[k + len(axes)]
    out_shape = tuple(shape[d] + begins[d] + ends[d] for d in range(rank))
    if any(s < 0 for s in out_shape):
        raise lw.fail(f"pads {pads} remove more than the input has")
    # Negative pads crop first; the other modes then pad what is left (as ONNX Runtime).
    maps = []
    for d in range(rank):
        start, stop = max(0, -begins[d]), shape[d] - max(0, -ends[d])
        if stop <= start and out_shape[d]:
            raise lw.fail(f"pads {pads} crop axis {d} away and pad it again")
        kept = _pad_map(stop - start, max(0, begins[d]), out_shape[d], mode)
        maps.append(np.where(kept >= 0, kept + start, -1))
    needs_fill = mode == "constant" and any((m < 0).any() for m in maps)
    _emit_remap(lw, node, maps, out_shape, fill if needs_fill else None)


def _source_coordinate(mode: str, x: np.ndarray, scale: np.float32, n_in: int, n_out: int,
                       ) -> np.ndarray:
    """Input coordinates of output indices ``x`` (float32 arithmetic, as ONNX Runtime)."""
    half = np.float32(0.5)
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros_like(x)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "align_corners":
        if n_out == 1:
            return np.zeros_like(x)
        return x * np.float32(n_in - 1) / np.float32(n_out - 1)
    if mode == "half_pixel_symmetric":
        adjustment = np.float32(n_out) / (scale * np.float32(n_in))
        offset = np.float32(n_in / 2) * (np.float32(1) - adjustment)
        return offset + (x + half) / scale - half
    return x / scale  # asymmetric


def _nearest(mode: str, original: np.ndarray, downsample: bool) -> np.ndarray:
    if mode == "round_prefer_floor":
        halfway = original == np.trunc(original) + np.float32(0.5)
        rounded = np.where(original >= 0, np.floor(original + 0.5), np.ceil(original - 0.5))
        return np.where(halfway, np.floor(original), rounded)
    if mode == "round_prefer_ceil":  # C round(): half away from zero
        return np.where(original >= 0, np.floor(original + 0.5), np.ceil(original - 0.5))
    if mode == "floor":
        return np.floor(original)
    if mode == "ceil":
        return np.ceil(original)
    return np.ceil(original) if downsample else np.trunc(original)  # Upsample, Resize-10


@register("Resize", "Upsample")
def resize(lw: Lowering, node: onnx.NodeProto) -> None:
    attrs = attributes(node)
    mode = attrs.get("mode", "nearest")
    if mode != "nearest":
        raise lw.fail(f"mode {mode!r} is not supported (only nearest)")
    shape = lw.shape_of(node.input[0])
    rank = len(shape)
    out_shape = lw.out_shape(node.output[0])
    if len(out_shape) != rank:
        raise lw.fail(f"the output has rank {len(out_shape)}, the input {rank}")
    modern = node.op_type == "Resize" and lw.opset >= 11
    transform = attrs.get("coordinate_transformation_mode", "half_pixel") if modern \
        else "asymmetric"
    rounding = attrs.get("nearest_mode", "round_prefer_floor") if modern else "simple"
    if transform == "tf_crop_and_resize":
        raise lw.fail("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
    known = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "align_corners",
             "half_pixel_symmetric", "asymmetric")
    if transform not in known:
        raise lw.fail(f"coordinate_transformation_mode {transform!r} is not supported")
    if rounding not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"):
        raise lw.fail(f"nearest_mode {rounding!r} is not supported")
    scales = np.ones(rank, np.float32)
    given_scales: np.ndarray | None = None
    if node.op_type == "Upsample" and lw.opset < 9:
        given_scales = np.asarray(attrs.get("scales", []), np.float32)
    else:
        index = 2 if modern else 1
        if lw.has(node, index):
            value = lw.const(node.input[index])
            if value is None:
                raise lw.fail("the scales input must be a constant")
            given_scales = np.asarray(value, np.float32).ravel()
            if given_scales.size == 0:
                given_scales = None
    axes = _axes(lw, node, None, rank)
    if given_scales is not None:
        if given_scales.size != len(axes):
            raise lw.fail(f"{given_scales.size} scales for {len(axes)} axes")
        scales[axes] = given_scales
    else:
        sizes = _const_ints(lw, node, 3, "sizes") if modern else None
        if sizes is None:
            raise lw.fail("neither scales nor sizes are given")
        if len(sizes) != len(axes):
            raise lw.fail(f"{len(sizes)} sizes for {len(axes)} axes")
        ratios = np.array([np.float32(s) / np.float32(shape[a]) for s, a in zip(sizes, axes,
                                                                                 strict=True)],
                          np.float32)
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy == "not_larger":
            ratios[:] = ratios.min()
        elif policy == "not_smaller":
            ratios[:] = ratios.max()
        scales[axes] = ratios
    if np.any(scales <= 0):
        raise lw.fail(f"scales {scales.tolist()} must be positive")
    maps = []
    for d in range(rank):
        n_in, n_out = shape[d], out_shape[d]
        if n_out == n_in and scales[d] == 1:
            maps.append(np.arange(n_out, dtype=np.int64))
            continue
        coords = np.arange(n_out, dtype=np.float32)
        original = _source_coordinate(transform, coords, np.float32(scales[d]), n_in, n_out)
        index = _nearest(rounding, original.astype(np.float32), bool(scales[d] < 1))
        maps.append(np.clip(index, 0, n_in - 1).astype(np.int64))
    _emit_remap(lw, node, maps, out_shape, None)
