"""An exact numpy model of what the generated C computes, independent of the CPU.

The generated code is verified against this reference, not against ONNX Runtime: ONNX
Runtime's optimized int8 kernels choose different code per CPU (VNNI or not; without VNNI
its AVX2 u8s8 kernels add pairs of products in saturating 16-bit lanes), so its int8
results move with the machine and cannot judge bit-exact code.

:class:`Reference` lowers the model with the compiler's own lowering (the same kernel list,
weights, integer biases and fixed-point multipliers as the generated C), then interprets
that list with an independent numpy implementation of every kernel:

* integer kernels in int64 with TFLite's requantization
  (:func:`~tinymlaas.compiler.quant.multiply_by_quantized_multiplier`: a Q31 multiplier,
  a doubling high multiply rounding half up, a power-of-two division rounding half away
  from zero), int32 wrap-around where C stores an int32, saturation to the output range:
  bit-exact by construction;
* float kernels in float32, one rounding per operation, in the C loops' summation order:
  bit-exact too, except the transcendental functions (``exp``, ``log``, ``tanh``, ``erf``:
  computed in float64 and rounded once, where the C library's ``expf`` ... may be off by
  one unit in the last place).

Memory is modelled per buffer (no arena): the memory planner's placement, the generated
code and the C compiler are what the comparison checks. Every input may carry a leading
batch dimension when the model was compiled for batch 1 (as :class:`HostModel` accepts);
the reference runs the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from tinymlaas.compiler.ckernels import split_func
from tinymlaas.compiler.ir import At, CArray, Kernel, Program, Tensor
from tinymlaas.compiler.loader import load_model, prepare
from tinymlaas.compiler.lower import lower
from tinymlaas.compiler.quant import multiply_by_quantized_multiplier
from tinymlaas.errors import InvalidInputError, UnsupportedModelError

__all__ = ["KERNELS", "Reference", "reference_program", "run_program"]

_NP_TYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "s8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "s16": np.dtype(np.int16),
    "u16": np.dtype(np.uint16),
    "s32": np.dtype(np.int32),
    "s64": np.dtype(np.int64),
    "b8": np.dtype(np.uint8),
    "b16": np.dtype(np.uint16),
    "b32": np.dtype(np.uint32),
    "b64": np.dtype(np.uint64),
}
_F32 = np.float32
_I64 = np.int64
#: Samples interpreted at once.
_CHUNK = 64


# ---------------------------------------------------------------------------- C arithmetic
def _wrap32(x: np.ndarray) -> np.ndarray:
    """An int64 value stored in an ``int32_t`` (two's complement wrap-around)."""
    return np.asarray(x, dtype=_I64).astype(np.int32).astype(_I64)


def _mbqm(x: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    return multiply_by_quantized_multiplier(_wrap32(x), mult, shift)


def _clampi(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.minimum(np.maximum(v, lo), hi)


def _clampf(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """C's ``v < lo ? lo : (v > hi ? hi : v)`` (NaN passes through)."""
    lo32, hi32 = _F32(lo), _F32(hi)
    return np.where(v < lo32, lo32, np.where(v > hi32, hi32, v)).astype(_F32)


def _div_round(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """``num > 0 ? (num + den / 2) / den : (num - den / 2) / den`` in C integer division."""
    den = np.asarray(den, dtype=_I64)
    half = den // 2
    shifted = np.where(num > 0, num + half, num - half)
    quotient = np.abs(shifted) // den
    return np.where(shifted < 0, -quotient, quotient)


def _qadd1(u: np.ndarray, v: np.ndarray, ma: int, sha: int, mb: int, shb: int, my: int,
           shy: int, yz: int, lo: int, hi: int) -> np.ndarray:
    """One element of TFLite's quantized Add (``u``, ``v`` already offset)."""
    total = _mbqm(u * (1 << 20), ma, sha) + _mbqm(v * (1 << 20), mb, shb)
    return _clampi(_mbqm(total, my, shy) + yz, lo, hi)


def _kbegin(i0: int, d: int) -> int:
    return 0 if i0 >= 0 else (-i0 + d - 1) // d


def _kend(i0: int, d: int, kn: int, n: int) -> int:
    if i0 >= n:
        return 0
    return min((n - i0 + d - 1) // d, kn)


# ---------------------------------------------------------------------------- memory
class _Memory:
    """Every buffer as ``batch`` rows of bytes; constants as one row."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.rows: dict[int, np.ndarray] = {}

    def _row(self, tensor: Tensor) -> np.ndarray:
        buffer = tensor.buffer
        key = id(buffer)
        if key not in self.rows:
            if buffer.kind == "const":
                assert buffer.data is not None
                raw = np.frombuffer(np.ascontiguousarray(buffer.data).tobytes(), np.uint8)
                self.rows[key] = raw.reshape(1, -1)
            else:
                self.rows[key] = np.zeros((self.batch, buffer.nbytes), np.uint8)
        return self.rows[key]

    def read(self, arg: object, dtype: np.dtype, count: int | None = None) -> np.ndarray:
        """``count`` elements (default: the tensor's) as ``(rows, count)`` of ``dtype``."""
        if arg is None:
            raise ValueError("NULL pointer read")
        tensor = arg.tensor if isinstance(arg, At) else arg
        assert isinstance(tensor, Tensor)
        offset = arg.offset if isinstance(arg, At) else 0
        dtype = np.dtype(dtype)
        n = tensor.size if count is None else count
        row = self._row(tensor)
        data = np.ascontiguousarray(row[:, offset:offset + n * dtype.itemsize])
        return data.view(dtype).reshape(row.shape[0], n)

    def write(self, arg: object, values: np.ndarray, dtype: np.dtype) -> None:
        """Store ``values`` (``(batch, ...)`` or broadcastable) as C would cast them."""
        tensor = arg.tensor if isinstance(arg, At) else arg
        assert isinstance(tensor, Tensor)
        if tensor.buffer.kind == "const":
            raise ValueError("a kernel writes a constant")
        offset = arg.offset if isinstance(arg, At) else 0
        values = np.asarray(values)
        flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
        flat = np.broadcast_to(flat, (self.batch, flat.shape[1]))
        data = np.ascontiguousarray(flat.astype(dtype)).view(np.uint8)
        self._row(tensor)[:, offset:offset + data.shape[1]] = data

    def bytes_of(self, arg: object) -> tuple[np.ndarray, int]:
        tensor = arg.tensor if isinstance(arg, At) else arg
        assert isinstance(tensor, Tensor)
        return self._row(tensor), (arg.offset if isinstance(arg, At) else 0)


def _table(arg: object, mem: _Memory, dtype: np.dtype, count: int) -> np.ndarray:
    """A parameter table: a :class:`CArray` (one row) or a runtime tensor (per sample)."""
    if isinstance(arg, CArray):
        return np.asarray(arg.values).astype(dtype).reshape(1, -1)[:, :count]
    return mem.read(arg, dtype, count)


# ---------------------------------------------------------------------------- windows
def _padded(x: np.ndarray, fill: object, H: int, W: int, OH: int, OW: int, KH: int, KW: int,
            SH: int, SW: int, PT: int, PL: int, DH: int, DW: int) -> np.ndarray:
    """``x[..., H, W]`` inside a frame of ``fill`` wide enough for every window tap."""
    hp = max(PT + H, (OH - 1) * SH + (KH - 1) * DH + 1)
    wp = max(PL + W, (OW - 1) * SW + (KW - 1) * DW + 1)
    out = np.full((*x.shape[:-2], hp, wp), fill, dtype=x.dtype)
    out[..., PT:PT + H, PL:PL + W] = x
    return out


def _tap(padded: np.ndarray, ky: int, kx: int, OH: int, OW: int, SH: int, SW: int, DH: int,
         DW: int) -> np.ndarray:
    y0, x0 = ky * DH, kx * DW
    return padded[..., y0:y0 + (OH - 1) * SH + 1:SH, x0:x0 + (OW - 1) * SW + 1:SW]


def _pool_counts(H: int, W: int, OH: int, OW: int, KH: int, KW: int, SH: int, SW: int,
                 PT: int, PL: int, PB: int, PR: int, DH: int, DW: int,
                 include_pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output: the number of taps inside the input, and the averaging count."""
    valid = np.zeros((OH, OW), dtype=_I64)
    count = np.zeros((OH, OW), dtype=_I64)
    for oy in range(OH):
        iy0 = oy * SH - PT
        vy = _kend(iy0, DH, KH, H) - _kbegin(iy0, DH)
        py = (_kend(iy0 + PT, DH, KH, H + PT + PB) - _kbegin(iy0 + PT, DH)) if include_pad \
            else vy
        for ox in range(OW):
            ix0 = ox * SW - PL
            vx = _kend(ix0, DW, KW, W) - _kbegin(ix0, DW)
            px = (_kend(ix0 + PL, DW, KW, W + PL + PR) - _kbegin(ix0 + PL, DW)) \
                if include_pad else vx
            valid[oy, ox] = max(vy, 0) * max(vx, 0)
            count[oy, ox] = py * px
    return valid, count


# ---------------------------------------------------------------------------- kernels
_Impl = Callable[[Kernel, list[str], _Memory], None]
KERNELS: dict[str, _Impl] = {}


def _kernel(*names: str) -> Callable[[_Impl], _Impl]:
    def decorate(impl: _Impl) -> _Impl:
        for name in names:
            KERNELS[name] = impl
        return impl

    return decorate


def _conv_accumulate(mem: _Memory, k: Kernel, xt: np.dtype, integer: bool) -> tuple[
        np.ndarray, list[int]]:
    """The convolution sums ``bias + sum w * (x - xz)`` shaped ``(B, N, M, OH, OW)``."""
    x_arg, w_arg, b_arg = k.args[0], k.args[1], k.args[2]
    (N, C, H, W, M, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW, G) = (int(v) for v in k.args[4:20])
    cg, mg = C // G, M // G
    acc_type = np.dtype(_I64) if integer else np.dtype(_F32)
    x = mem.read(x_arg, xt, N * C * H * W)
    w = mem.read(w_arg, np.dtype(np.int8) if integer else acc_type, M * cg * KH * KW)
    batch = max(x.shape[0], w.shape[0])
    w = np.broadcast_to(w.astype(acc_type).reshape(-1, G, mg, cg, KH, KW),
                        (batch, G, mg, cg, KH, KW))
    if b_arg is None:
        bias = np.zeros((1, M), acc_type)
    else:
        bias = mem.read(b_arg, np.dtype(np.int32) if integer else acc_type, M).astype(acc_type)
    acc = np.broadcast_to(bias.reshape(-1, 1, G, mg, 1, 1), (batch, N, G, mg, OH, OW)).copy()
    x = x.reshape(-1, N, G, cg, H, W)
    if integer:
        x = x.astype(_I64) - int(k.args[20])  # padding adds w * 0: skipped taps
    padded = _padded(x, 0, H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
    taps = (OH, OW, SH, SW, DH, DW)
    if integer:
        for ky in range(KH):
            for kx in range(KW):
                patch = np.broadcast_to(_tap(padded, ky, kx, *taps),
                                        (batch, N, G, cg, OH, OW))
                acc += np.einsum("bgmc,bngcyx->bngmyx", w[..., ky, kx], patch)
        return _wrap32(acc).reshape(batch, N, M, OH, OW), [N, M, OH, OW]
    # The C order: bias, then channel, row, column of the kernel; one rounding per step.
    for c in range(cg):
        for ky in range(KH):
            for kx in range(KW):
                patch = _tap(padded[:, :, :, c], ky, kx, *taps)[:, :, :, None]
                acc += w[:, None, :, :, c, ky, kx, None, None] * patch
    return acc.reshape(batch, N, M, OH, OW), [N, M, OH, OW]


@_kernel("qconv2d")
def _qconv2d(k: Kernel, types: list[str], mem: _Memory) -> None:
    acc, _ = _conv_accumulate(mem, k, _NP_TYPES[types[0]], integer=True)
    M = int(k.args[8])
    yz = int(k.args[21])
    mult = _table(k.args[22], mem, np.dtype(np.int32), M)[0].astype(_I64)
    shift = _table(k.args[23], mem, np.dtype(np.int32), M)[0].astype(_I64)
    lo, hi = int(k.args[24]), int(k.args[25])
    y = _clampi(_mbqm(acc, mult[None, None, :, None, None], shift[None, None, :, None, None])
                + yz, lo, hi)
    mem.write(k.args[3], y, _NP_TYPES[types[1]])


@_kernel("qconv2d_add")
def _qconv2d_add(k: Kernel, types: list[str], mem: _Memory) -> None:
    acc, dims = _conv_accumulate(mem, k, _NP_TYPES[types[0]], integer=True)
    M = int(k.args[8])
    (cz, mult_arg, shift_arg, clo, chi, r_arg, rz, yz, ma, sha, mb, shb, my, shy, lo,
     hi) = k.args[21:37]
    mult = _table(mult_arg, mem, np.dtype(np.int32), M)[0].astype(_I64)[None, None, :, None,
                                                                        None]
    shift = _table(shift_arg, mem, np.dtype(np.int32), M)[0].astype(_I64)[None, None, :,
                                                                          None, None]
    yt = _NP_TYPES[types[1]]
    conv = _clampi(_mbqm(acc, mult, shift) + int(cz), int(clo), int(chi)) - int(cz)
    r = mem.read(r_arg, yt, int(np.prod(dims))).astype(_I64).reshape(acc.shape) - int(rz)
    y = _qadd1(conv, r, int(ma), int(sha), int(mb), int(shb), int(my), int(shy), int(yz),
               int(lo), int(hi))
    mem.write(k.args[3], y, yt)


@_kernel("conv2d")
def _conv2d(k: Kernel, types: list[str], mem: _Memory) -> None:
    acc, _ = _conv_accumulate(mem, k, np.dtype(_F32), integer=False)
    mem.write(k.args[3], _clampf(acc, float(k.args[20]), float(k.args[21])), np.dtype(_F32))


@_kernel("conv2d_add")
def _conv2d_add(k: Kernel, types: list[str], mem: _Memory) -> None:
    acc, dims = _conv_accumulate(mem, k, np.dtype(_F32), integer=False)
    r = mem.read(k.args[20], np.dtype(_F32), int(np.prod(dims))).reshape(acc.shape)
    y = _clampf((acc + r).astype(_F32), float(k.args[21]), float(k.args[22]))
    mem.write(k.args[3], y, np.dtype(_F32))


@_kernel("qgemm")
def _qgemm(k: Kernel, types: list[str], mem: _Memory) -> None:
    a_arg, w_arg, b_arg, y_arg = k.args[:4]
    M, K, N, az, yz = (int(v) for v in k.args[4:9])
    a = mem.read(a_arg, _NP_TYPES[types[0]], M * K).astype(_I64).reshape(-1, M, K) - az
    w = mem.read(w_arg, np.dtype(np.int8), N * K)[0].astype(_I64).reshape(N, K)
    bias = np.zeros(N, _I64) if b_arg is None else \
        mem.read(b_arg, np.dtype(np.int32), N)[0].astype(_I64)
    acc = _wrap32(a @ w.T + bias)
    mult = _table(k.args[9], mem, np.dtype(np.int32), N)[0].astype(_I64)
    shift = _table(k.args[10], mem, np.dtype(np.int32), N)[0].astype(_I64)
    y = _clampi(_mbqm(acc, mult, shift) + yz, int(k.args[11]), int(k.args[12]))
    mem.write(y_arg, y, _NP_TYPES[types[1]])


@_kernel("gemm")
def _gemm(k: Kernel, types: list[str], mem: _Memory) -> None:
    a_arg, b_arg, bias_arg, y_arg = k.args[:4]
    M, K, N, ta, tb = (int(v) for v in k.args[4:9])
    alpha, bias_mode = _F32(k.args[9]), int(k.args[10])
    lo, hi = float(k.args[11]), float(k.args[12])
    a = mem.read(a_arg, np.dtype(_F32), M * K)
    a = a.reshape(-1, K, M).transpose(0, 2, 1) if ta else a.reshape(-1, M, K)
    b = mem.read(b_arg, np.dtype(_F32), K * N)
    b = b.reshape(-1, N, K) if tb else b.reshape(-1, K, N).transpose(0, 2, 1)  # as [n, k]
    if not ta and tb:
        # Eight partial sums over blocks of eight, combined pairwise, then the remainder.
        part = np.zeros((max(a.shape[0], b.shape[0]), M, N, 8), _F32)
        blocks = K // 8 * 8
        for k0 in range(0, blocks, 8):
            part += a[:, :, None, k0:k0 + 8] * b[:, None, :, k0:k0 + 8]
        p = [part[..., j] for j in range(8)]
        acc = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]))
        for kk in range(blocks, K):
            acc = acc + a[:, :, None, kk] * b[:, None, :, kk]
    else:
        acc = np.zeros((max(a.shape[0], b.shape[0]), M, N), _F32)
        for kk in range(K):
            acc = acc + a[:, :, None, kk] * b[:, None, :, kk]
    acc = (acc * alpha).astype(_F32)
    if bias_mode == 1:
        acc = acc + mem.read(bias_arg, np.dtype(_F32), N).reshape(-1, 1, N)
    elif bias_mode == 2:
        acc = acc + mem.read(bias_arg, np.dtype(_F32), M * N).reshape(-1, M, N)
    mem.write(y_arg, _clampf(acc.astype(_F32), lo, hi), np.dtype(_F32))


@_kernel("matmul")
def _matmul(k: Kernel, types: list[str], mem: _Memory) -> None:
    a_arg, b_arg, y_arg, batches, aoff, boff, M, K, N = k.args
    a_off = np.asarray(aoff.values, _I64)  # type: ignore[union-attr]
    b_off = np.asarray(boff.values, _I64)  # type: ignore[union-attr]
    M, K, N = int(M), int(K), int(N)
    a = mem.read(a_arg, np.dtype(_F32))
    b = mem.read(b_arg, np.dtype(_F32))
    outs = []
    for i in range(int(batches)):
        ai = a[:, a_off[i]:a_off[i] + M * K].reshape(-1, M, K)
        bi = b[:, b_off[i]:b_off[i] + K * N].reshape(-1, K, N)
        acc = np.zeros((max(ai.shape[0], bi.shape[0]), M, N), _F32)
        for kk in range(K):
            acc = acc + ai[:, :, kk, None] * bi[:, None, kk, :]
        outs.append(acc)
    mem.write(y_arg, np.stack(outs, axis=1), np.dtype(_F32))


@_kernel("maxpool")
def _maxpool(k: Kernel, types: list[str], mem: _Memory) -> None:
    xt = _NP_TYPES[types[0]]
    x_arg, y_arg, P, H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW = (
        k.args[0], k.args[1], *(int(v) for v in k.args[2:15]))
    lowest = k.args[15]
    x = mem.read(x_arg, xt, P * H * W).reshape(-1, P, H, W)
    fill = xt.type(lowest)
    padded = _padded(x, fill, H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
    best = np.full((x.shape[0], P, OH, OW), fill, dtype=xt)
    for ky in range(KH):
        for kx in range(KW):
            v = _tap(padded, ky, kx, OH, OW, SH, SW, DH, DW)
            best = np.where(v > best, v, best)
    mem.write(y_arg, best, xt)


@_kernel("avgpool")
def _avgpool(k: Kernel, types: list[str], mem: _Memory) -> None:
    (P, H, W, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW,
     include_pad) = (int(v) for v in k.args[2:18])
    x = mem.read(k.args[0], np.dtype(_F32), P * H * W).reshape(-1, P, H, W)
    padded = _padded(x, _F32(0), H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
    acc = np.zeros((x.shape[0], P, OH, OW), _F32)
    for ky in range(KH):
        for kx in range(KW):
            acc = acc + _tap(padded, ky, kx, OH, OW, SH, SW, DH, DW)
    _, count = _pool_counts(H, W, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, include_pad)
    safe = np.where(count > 0, count, 1).astype(_F32)
    y = np.where(count > 0, acc / safe, _F32(0)).astype(_F32)
    mem.write(k.args[1], y, np.dtype(_F32))


@_kernel("qavgpool")
def _qavgpool(k: Kernel, types: list[str], mem: _Memory) -> None:
    (P, H, W, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, include_pad, xz, yz, same,
     mult, shift, lo, hi) = (int(v) for v in k.args[2:25])
    x = mem.read(k.args[0], _NP_TYPES[types[0]], P * H * W).astype(_I64).reshape(-1, P, H, W)
    padded = _padded(x - xz, 0, H, W, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
    acc = np.zeros((x.shape[0], P, OH, OW), _I64)
    for ky in range(KH):
        for kx in range(KW):
            acc += _tap(padded, ky, kx, OH, OW, SH, SW, DH, DW)
    acc = _wrap32(acc)
    valid, count = _pool_counts(H, W, OH, OW, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW,
                                include_pad)
    count = np.where(count > 0, count, 1)
    if same:
        v = _div_round(_wrap32(acc + valid * xz), count) - yz
    else:
        v = _mbqm(_wrap32(_div_round(acc * 256, count)), mult, shift)
    mem.write(k.args[1], _clampi(v + yz, lo, hi), _NP_TYPES[types[1]])


@_kernel("gap")
def _gap(k: Kernel, types: list[str], mem: _Memory) -> None:
    P, HW = int(k.args[2]), int(k.args[3])
    x = mem.read(k.args[0], np.dtype(_F32), P * HW).reshape(-1, P, HW)
    acc = np.zeros(x.shape[:2], _F32)
    for i in range(HW):
        acc = acc + x[:, :, i]
    mem.write(k.args[1], acc / _F32(HW), np.dtype(_F32))


@_kernel("reduce_mean")
def _reduce_mean(k: Kernel, types: list[str], mem: _Memory) -> None:
    O, R, I = (int(v) for v in k.args[2:5])  # noqa: E741 - the C kernel's names
    x = mem.read(k.args[0], np.dtype(_F32), O * R * I).reshape(-1, O, R, I)
    acc = np.zeros((x.shape[0], O, I), _F32)
    for r in range(R):
        acc = acc + x[:, :, r]
    mem.write(k.args[1], acc / _F32(R), np.dtype(_F32))


def _f64(func: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A libm function in float64, rounded once to float32: the correctly rounded result
    but for rare double-rounding ties, the same on every CPU (numpy's float32 loops differ
    by instruction set, as the C library's do)."""
    return lambda v: func(np.asarray(v, np.float64)).astype(_F32)


_exp, _log, _tanh, _log1p = _f64(np.exp), _f64(np.log), _f64(np.tanh), _f64(np.log1p)
_erf = _f64(np.vectorize(math.erf, otypes=[np.float64]))


_ZERO, _ONE = _F32(0), _F32(1)
_UNARY: dict[str, Callable[[np.ndarray, np.float32, np.float32], np.ndarray]] = {
    "relu": lambda v, p0, p1: np.where(v > _ZERO, v, _ZERO),
    "clip": lambda v, p0, p1: np.where(v < p0, p0, np.where(v > p1, p1, v)),
    "sigmoid": lambda v, p0, p1: _ONE / (_ONE + _exp(-v)),
    "tanh": lambda v, p0, p1: _tanh(v),
    "leakyrelu": lambda v, p0, p1: np.where(v >= _ZERO, v, v * p0),
    "exp": lambda v, p0, p1: _exp(v),
    "log": lambda v, p0, p1: _log(v),
    "sqrt": lambda v, p0, p1: np.sqrt(v),
    "abs": lambda v, p0, p1: np.abs(v),
    "neg": lambda v, p0, p1: -v,
    "reciprocal": lambda v, p0, p1: _ONE / v,
    "floor": lambda v, p0, p1: np.floor(v),
    "ceil": lambda v, p0, p1: np.ceil(v),
    "erf": lambda v, p0, p1: _erf(v),
    "hardsigmoid": lambda v, p0, p1: np.fmax(_ZERO, np.fmin(_ONE, p0 * v + p1)),
    "hardswish": lambda v, p0, p1: v * np.fmax(_ZERO, np.fmin(_ONE, v / _F32(6) + _F32(0.5))),
    "elu": lambda v, p0, p1: np.where(v >= _ZERO, v, p0 * (_exp(v) - _ONE)),
    "softplus": lambda v, p0, p1: np.where(v > _F32(20), v, _log1p(_exp(v))),
    "softsign": lambda v, p0, p1: v / (_ONE + np.abs(v)),
}

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": lambda u, v: np.where(u > v, u, v),
    "min": lambda u, v: np.where(u < v, u, v),
}


def _broadcast_index(mem: _Memory, k: Kernel) -> tuple[np.ndarray, np.ndarray]:
    rank = int(k.args[3])
    shape = np.asarray(k.args[4].values, _I64)[:rank]  # type: ignore[union-attr]
    sa = np.asarray(k.args[5].values, _I64)[:rank]  # type: ignore[union-attr]
    sb = np.asarray(k.args[6].values, _I64)[:rank]  # type: ignore[union-attr]
    index = np.indices(tuple(int(d) for d in shape)).reshape(rank, -1)
    return sa @ index, sb @ index


def _operands(mem: _Memory, k: Kernel, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    ia, ib = _broadcast_index(mem, k)
    a = mem.read(k.args[0], dtype, int(ia.max(initial=0)) + 1)
    b = mem.read(k.args[1], dtype, int(ib.max(initial=0)) + 1)
    return a[:, ia], b[:, ib]


@_kernel(*(f"unary_{op}" for op in _UNARY))
def _unary(k: Kernel, types: list[str], mem: _Memory) -> None:
    op = split_func(k.func)[0].removeprefix("unary_")
    n = int(k.args[2])
    x = mem.read(k.args[0], np.dtype(_F32), n)
    with np.errstate(all="ignore"):
        y = _UNARY[op](x, _F32(k.args[3]), _F32(k.args[4]))
    mem.write(k.args[1], np.asarray(y, _F32), np.dtype(_F32))


@_kernel(*(f"binary_{op}" for op in _BINARY))
def _binary(k: Kernel, types: list[str], mem: _Memory) -> None:
    op = split_func(k.func)[0].removeprefix("binary_")
    dtype = _NP_TYPES[types[0]]
    u, v = _operands(mem, k, dtype)
    with np.errstate(all="ignore"):
        y = _BINARY[op](u, v).astype(dtype)
    mem.write(k.args[2], y, dtype)


@_kernel("qadd", "qmul")
def _qbinary(k: Kernel, types: list[str], mem: _Memory) -> None:
    u, v = _operands(mem, k, _NP_TYPES[types[0]])
    az, bz, yz, ma, sha, mb, shb, my, shy, lo, hi = (int(a) for a in k.args[7:18])
    u, v = u.astype(_I64) - az, v.astype(_I64) - bz
    if k.func.startswith("tm_qadd"):
        y = _qadd1(u, v, ma, sha, mb, shb, my, shy, yz, lo, hi)
    else:
        y = _clampi(_mbqm(u * v, my, shy) + yz, lo, hi)
    mem.write(k.args[2], y, _NP_TYPES[types[1]])


@_kernel("cliprt")
def _cliprt(k: Kernel, types: list[str], mem: _Memory) -> None:
    dtype = _NP_TYPES[types[0]]
    n = int(k.args[4])
    v = mem.read(k.args[0], dtype, n)
    if k.args[1] is not None:
        lo = mem.read(k.args[1], dtype, 1)
        v = np.where(v < lo, lo, v)
    if k.args[2] is not None:
        hi = mem.read(k.args[2], dtype, 1)
        v = np.where(v > hi, hi, v)
    mem.write(k.args[3], v, dtype)


@_kernel("clamp")
def _clamp(k: Kernel, types: list[str], mem: _Memory) -> None:
    dtype = _NP_TYPES[types[0]]
    x = mem.read(k.args[0], dtype, int(k.args[2])).astype(_I64)
    mem.write(k.args[1], _clampi(x, int(k.args[3]), int(k.args[4])), dtype)


@_kernel("lut")
def _lut(k: Kernel, types: list[str], mem: _Memory) -> None:
    xt, yt = _NP_TYPES[types[0]], _NP_TYPES[types[1]]
    n = int(k.args[2])
    x = mem.read(k.args[0], xt, n).astype(_I64) + (128 if types[0] == "s8" else 0)
    table = mem.read(k.args[3], yt)[0]
    mem.write(k.args[1], table[x], yt)


@_kernel("softmax")
def _softmax(k: Kernel, types: list[str], mem: _Memory) -> None:
    outer, n, inner = (int(v) for v in k.args[2:5])
    x = mem.read(k.args[0], np.dtype(_F32), outer * n * inner).reshape(-1, outer, n, inner)
    mx = x[:, :, 0]
    for j in range(1, n):
        mx = np.where(x[:, :, j] > mx, x[:, :, j], mx)
    with np.errstate(all="ignore"):
        e = _exp((x - mx[:, :, None]).astype(_F32))
        total = np.zeros_like(mx)
        for j in range(n):
            total = total + e[:, :, j]
        inv = _ONE / total
    mem.write(k.args[1], e * inv[:, :, None], np.dtype(_F32))


@_kernel("qsoftmax")
def _qsoftmax(k: Kernel, types: list[str], mem: _Memory) -> None:
    outer, n, inner = (int(v) for v in k.args[2:5])
    x = mem.read(k.args[0], _NP_TYPES[types[0]], outer * n * inner).astype(_I64)
    x = x.reshape(-1, outer, n, inner)
    table = mem.read(k.args[5], np.dtype(_F32), 256)[0]
    ys, yz, lo, hi = _F32(k.args[6]), int(k.args[7]), int(k.args[8]), int(k.args[9])
    e = table[x.max(axis=2, keepdims=True) - x]
    total = np.zeros(e[:, :, 0].shape, _F32)
    for j in range(n):
        total = total + e[:, :, j]
    inv = _ONE / total
    p = e * inv[:, :, None]
    q = np.rint(p / ys).astype(_I64)
    mem.write(k.args[1], _clampi(q + yz, lo, hi), _NP_TYPES[types[1]])


def _axis_params(k: Kernel, mem: _Memory, zp_type: np.dtype) -> tuple[np.ndarray, ...]:
    outer, channels, inner = (int(v) for v in k.args[2:5])
    scale = _table(k.args[5], mem, np.dtype(_F32), channels)
    zp = _table(k.args[6], mem, zp_type, channels).astype(_F32)
    return (scale.reshape(-1, 1, channels, 1), zp.reshape(-1, 1, channels, 1),
            np.array([outer, channels, inner]))


@_kernel("quantize")
def _quantize(k: Kernel, types: list[str], mem: _Memory) -> None:
    yt = _NP_TYPES[types[0]]
    scale, zp, (outer, channels, inner) = _axis_params(k, mem, yt)
    x = mem.read(k.args[0], np.dtype(_F32), outer * channels * inner)
    x = x.reshape(-1, outer, channels, inner)
    info = np.iinfo(yt)
    with np.errstate(all="ignore"):
        v = (np.rint(x / scale) + zp).astype(_F32)
    v = _clampf(v, float(info.min), float(info.max))
    mem.write(k.args[1], v, yt)


@_kernel("dequantize")
def _dequantize(k: Kernel, types: list[str], mem: _Memory) -> None:
    xt = _NP_TYPES[types[0]]
    scale, zp, (outer, channels, inner) = _axis_params(k, mem, xt)
    x = mem.read(k.args[0], xt, outer * channels * inner).reshape(-1, outer, channels, inner)
    y = (x.astype(_F32) - zp) * scale
    mem.write(k.args[1], y.astype(_F32), np.dtype(_F32))


@_kernel("requant")
def _requant(k: Kernel, types: list[str], mem: _Memory) -> None:
    n, xz, yz, mult, shift, lo, hi = (int(v) for v in k.args[2:9])
    x = mem.read(k.args[0], _NP_TYPES[types[0]], n).astype(_I64)
    mem.write(k.args[1], _clampi(_mbqm(x - xz, mult, shift) + yz, lo, hi),
              _NP_TYPES[types[1]])


@_kernel("transpose")
def _transpose(k: Kernel, types: list[str], mem: _Memory) -> None:
    dtype = _NP_TYPES[types[0]]
    rank = int(k.args[2])
    shape = np.asarray(k.args[3].values, _I64)[:rank]  # type: ignore[union-attr]
    strides = np.asarray(k.args[4].values, _I64)[:rank]  # type: ignore[union-attr]
    index = strides @ np.indices(tuple(int(d) for d in shape)).reshape(rank, -1)
    x = mem.read(k.args[0], dtype, int(index.max(initial=0)) + 1)
    mem.write(k.args[1], x[:, index], dtype)


@_kernel("remap")
def _remap(k: Kernel, types: list[str], mem: _Memory) -> None:
    dtype = _NP_TYPES[types[0]]
    rank = int(k.args[2])
    shape = [int(d) for d in np.asarray(k.args[3].values)[:rank]]  # type: ignore[union-attr]
    strides = np.asarray(k.args[4].values, _I64)[:rank]  # type: ignore[union-attr]
    tables = np.split(np.asarray(k.args[5].values, _I64),  # type: ignore[union-attr]
                      np.cumsum(shape)[:-1])
    grids = np.meshgrid(*tables[:rank], indexing="ij") if rank else []
    inside = np.ones(int(np.prod(shape)), bool)
    offset = np.zeros(int(np.prod(shape)), _I64)
    for d, grid in enumerate(grids):
        inside &= grid.ravel() >= 0
        offset += np.where(grid.ravel() >= 0, grid.ravel(), 0) * strides[d]
    x = mem.read(k.args[0], dtype, int(offset.max(initial=0)) + 1)
    y = x[:, offset]
    if not inside.all():
        y = np.where(inside, y, _table(k.args[6], mem, dtype, 1)[:, :1])
    mem.write(k.args[1], y, dtype)


@_kernel("copy2d")
def _copy2d(k: Kernel, types: list[str], mem: _Memory) -> None:
    dst, src = k.args[0], k.args[1]
    rows, row_bytes, dst_stride, src_stride = (int(v) for v in k.args[2:6])
    src_row, src_off = mem.bytes_of(src)
    dst_row, dst_off = mem.bytes_of(dst)
    if dst_row.shape[0] != mem.batch:
        raise ValueError("a kernel writes a constant")
    cols = np.arange(row_bytes)
    s_index = (src_off + np.arange(rows)[:, None] * src_stride + cols).ravel()
    d_index = (dst_off + np.arange(rows)[:, None] * dst_stride + cols).ravel()
    dst_row[:, d_index] = src_row[:, s_index]


@_kernel("batchnorm")
def _batchnorm(k: Kernel, types: list[str], mem: _Memory) -> None:
    N, C, inner = int(k.args[6]), int(k.args[7]), int(k.args[8])
    eps = _F32(k.args[9])
    scale, bias, mean, var = (mem.read(a, np.dtype(_F32), C).reshape(-1, 1, C, 1)
                              for a in k.args[1:5])
    a = (scale / np.sqrt((var + eps).astype(_F32))).astype(_F32)
    b = (bias - mean * a).astype(_F32)
    x = mem.read(k.args[0], np.dtype(_F32), N * C * inner).reshape(-1, N, C, inner)
    mem.write(k.args[5], (x * a + b).astype(_F32), np.dtype(_F32))


# ---------------------------------------------------------------------------- driver
def _base(func: str) -> str:
    return "copy2d" if func == "tm_copy2d" else split_func(func)[0]


def run_program(program: Program, *inputs: np.ndarray) -> list[np.ndarray]:
    """Interpret a lowered program on numpy inputs.

    Args:
        program: A program from :func:`tinymlaas.compiler.lower.lower` (planned or not).
        *inputs: One array per model input: the compiled shape, or with a larger first
            dimension when the compiled one is 1.

    Returns:
        One array per model output, batched like the inputs.

    Raises:
        InvalidInputError: Inputs of the wrong number, type or shape.
        UnsupportedModelError: A kernel the reference does not model (an unsupported
            operator's stand-in).
    """
    if len(inputs) != len(program.inputs):
        raise InvalidInputError(f"The model takes {len(program.inputs)} input(s), "
                                f"got {len(inputs)}.")
    batch, looped = 1, False
    arrays, batched = [], []
    for array, tensor in zip(inputs, program.inputs, strict=True):
        array = np.asarray(array)
        if array.dtype != tensor.dtype:
            if tensor.dtype.kind != "f" or array.dtype.kind not in "fiu":
                raise InvalidInputError(f"Input {tensor.name!r} must be {tensor.dtype.name}, "
                                        f"got {array.dtype.name}.")
            array = array.astype(tensor.dtype)
        batched.append(array.shape != tensor.shape)
        if array.shape == tensor.shape:
            arrays.append(array.reshape(1, -1))
            continue
        if (tensor.shape and tensor.shape[0] == 1 and array.ndim == len(tensor.shape)
                and array.shape[1:] == tensor.shape[1:]):
            batch, looped = array.shape[0], True
            arrays.append(array.reshape(array.shape[0], -1))
            continue
        raise InvalidInputError(f"Input {tensor.name!r} must have shape {list(tensor.shape)} "
                                f"(or any batch size), got {list(array.shape)}.")
    if any(a.shape[0] not in (1, batch) for a in arrays):
        raise InvalidInputError("All inputs must have the same batch size.")
    if batch > _CHUNK:  # bounded memory: every buffer is held for the whole batch
        parts = [run_program(program, *(np.asarray(a)[start:start + _CHUNK] if sliced else a
                                         for a, sliced in zip(inputs, batched, strict=True)))
                 for start in range(0, batch, _CHUNK)]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]
    mem = _Memory(batch)
    for array, tensor in zip(arrays, program.inputs, strict=True):
        mem.write(tensor, array, tensor.dtype)
    for kernel in program.kernels:
        impl = KERNELS.get(_base(kernel.func))
        if impl is None:
            raise UnsupportedModelError(
                f"The reference has no model of kernel {kernel.func} "
                f"(nodes: {', '.join(kernel.nodes)}).", {"nodes": list(kernel.nodes)})
        impl(kernel, split_func(kernel.func)[1], mem)
    outputs = []
    for tensor in program.outputs:
        flat = mem.read(tensor, tensor.dtype)
        shape = (batch, *tensor.shape[1:]) if looped else tensor.shape
        outputs.append(np.broadcast_to(flat, (batch, flat.shape[1])).reshape(shape).copy())
    return outputs


def reference_program(
    model: str | Path | onnx.ModelProto, *, simplify: bool = True, fuse_residual: bool = True
) -> Program:
    """The compiler's lowering of ``model`` (no memory plan), as :func:`compile_onnx` does it."""
    prepared, shapes = prepare(load_model(model), simplify=simplify)
    return lower(prepared, shapes, strict=True, fuse_residual=fuse_residual)


class Reference:
    """The exact reference of one model, as compiled with the same options.

    Args:
        model: The ``.onnx`` file or a loaded model.
        simplify: As given to :func:`compile_onnx`.
        fuse_residual: As given to :func:`compile_onnx`.
    """

    def __init__(self, model: str | Path | onnx.ModelProto, *, simplify: bool = True,
                 fuse_residual: bool = True) -> None:
        self.program = reference_program(model, simplify=simplify, fuse_residual=fuse_residual)

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.program.output_specs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The outputs the generated C must produce (see :func:`run_program`)."""
        return run_program(self.program, *inputs)
