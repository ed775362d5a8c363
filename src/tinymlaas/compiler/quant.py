"""Fixed-point helpers shared by the compiler and its tests.

The functions mirror TensorFlow Lite's reference integer arithmetic
(``QuantizeMultiplier`` and ``MultiplyByQuantizedMultiplier``) so the C kernels and a
numpy model of them agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "dtype_range",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "quantize_multipliers",
]

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split a positive real multiplier into a Q31 integer and a power-of-two shift.

    ``real ~= multiplier * 2**(shift - 31)``, exactly as TFLite's ``QuantizeMultiplier``.

    Args:
        real: The multiplier, e.g. ``input_scale * weight_scale / output_scale``.

    Returns:
        ``(multiplier, shift)``; a zero or negligibly small ``real`` gives ``(0, 0)``.
    """
    if real <= 0.0 or not math.isfinite(real):
        return 0, 0
    fraction, shift = math.frexp(real)
    q_fixed = round(fraction * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return _INT32_MAX, 30
    return int(q_fixed), int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` for each element, as two int32 arrays."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return mult, shift


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` on int32 values (vectorised, int64 inside)."""
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    a = (x << left).astype(np.int32).astype(np.int64)
    ab = a * multiplier
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C integer division truncates toward zero.
    total = ab + nudge
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))
    saturate = (a == multiplier) & (a == _INT32_MIN)
    high = np.where(saturate, _INT32_MAX, high)
    return _rounding_divide_by_pot(high, right)


def dtype_range(dtype: np.dtype | type) -> tuple[int, int]:
    """The representable range of an integer dtype."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)
