"""TFLite's integer softmax in numpy: gemmlowp's fixed-point exp and reciprocal, element for
element what ``tm_qsoftmax_tfl_*`` computes in C and TFLite Micro's reference kernel
computes on a device (``reference_ops::Softmax`` for int8/uint8).

All values are int32 raw fixed-point numbers held in int64 arrays; every helper mirrors
the gemmlowp or TFLite function of the same name.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exp_on_negative_values", "get_reciprocal", "softmax_tflite"]

_MIN, _MAX = -(1 << 31), (1 << 31) - 1
_I64 = np.int64


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul."""
    a, b = np.asarray(a, _I64), np.asarray(b, _I64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    quotient = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))
    return np.where((a == b) & (a == _MIN), _MAX, quotient)


def rdbpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: rounds half away from zero."""
    x = np.asarray(x, _I64)
    mask = (np.asarray(1, _I64) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def sat_shl(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT for a positive exponent."""
    x = np.asarray(x, _I64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, _MAX, np.where(x < -threshold, _MIN, x << exponent))


def _exp_quarter(a: np.ndarray) -> np.ndarray:
    c, third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    t = rdbpot(srdhm(rdbpot(x4, 2) + x3, third) + x2, 1)
    return c + srdhm(c, x + t)


def exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """exp of a Q5.26 value <= 0, as Q0.31."""
    a = np.asarray(a, _I64)
    quarter = 1 << 24
    mod = (a & (quarter - 1)) - quarter
    result = _exp_quarter(sat_shl(mod, 5))
    remainder = mod - a
    for k, mult in enumerate((1672461947, 1302514674, 790015084, 290630308, 39332535,
                              720401, 242)):
        result = np.where(remainder & (1 << (24 + k)), srdhm(result, mult), result)
    return np.where(a == 0, _MAX, result)


def get_reciprocal(x: np.ndarray, integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's GetReciprocal: (1 / x as Q0.31 scaled to [0.5, 1), bits over unit)."""
    x = np.asarray(x, _I64)
    headroom = np.full(x.shape, 32, _I64)
    for bit in range(31, -1, -1):
        headroom = np.where((headroom == 32) & ((x >> bit) & 1 == 1), 31 - bit, headroom)
    shifted = ((x << headroom) & 0xFFFFFFFF) - (1 << 31)
    total = shifted + _MAX
    half = np.where(total >= 0, (total + 1) // 2, -((-(total - 1)) // 2))
    y = 1515870810 + srdhm(half, -1010580540)
    for _ in range(3):
        y = y + sat_shl(srdhm(y, (1 << 29) - srdhm(half, y)), 2)
    return sat_shl(y, 1), integer_digits - headroom


def softmax_tflite(x: np.ndarray, mult: int, shift: int, diff_min: int, ymin: int, ymax: int,
                   axis: int = -1) -> np.ndarray:
    """TFLite's quantized softmax of integer ``x`` along ``axis`` (8-bit output)."""
    q = np.asarray(x, _I64)
    diff = q - q.max(axis=axis, keepdims=True)
    valid = diff >= diff_min
    exps = exp_on_negative_values(srdhm(np.where(valid, diff, 0) * (1 << shift), mult))
    total = np.where(valid, rdbpot(exps, 12), 0).sum(axis=axis, keepdims=True)
    scale, over = get_reciprocal(total, 12)
    out = rdbpot(srdhm(scale, exps), over + 31 - 8) + ymin
    return np.where(valid, np.clip(out, ymin, ymax), ymin)


_TYPES = {"s8": np.dtype(np.int8), "u8": np.dtype(np.uint8)}


def register_reference() -> None:
    """Model ``tm_qsoftmax_tfl_*`` in the exact reference interpreter, when it is there
    and has no model of its own for the kernel."""
    try:
        from tinymlaas.compiler import reference
    except ImportError:  # pragma: no cover - the reference is optional
        return

    def model(kernel, types, mem) -> None:  # type: ignore[no-untyped-def]
        outer, n, inner = (int(v) for v in kernel.args[2:5])
        x = mem.read(kernel.args[0], _TYPES[types[0]], outer * n * inner)
        x = x.astype(_I64).reshape(-1, outer, n, inner)
        y = softmax_tflite(x, *(int(v) for v in kernel.args[5:10]), axis=2)
        mem.write(kernel.args[1], y, _TYPES[types[1]])

    reference.KERNELS.setdefault("qsoftmax_tfl", model)
