"""Fixed-point helpers against exact arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinymlaas.compiler.quant import multiply_by_quantized_multiplier, quantize_multiplier


@pytest.mark.parametrize("real", [0.5, 0.25, 1e-4, 0.0078125, 0.7071, 0.999999, 1.5, 3.0])
def test_quantize_multiplier_round_trips(real: float) -> None:
    mult, shift = quantize_multiplier(real)
    assert 2**30 <= mult < 2**31
    assert mult * 2.0 ** (shift - 31) == pytest.approx(real, rel=1e-9)


def test_quantize_multiplier_edges() -> None:
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)
    assert quantize_multiplier(0.5) == (2**30, 0)


def test_doubling_high_multiply_rounds_half_up() -> None:
    # Multiplier 0.5 with no shift: all rounding is in SaturatingRoundingDoublingHighMul.
    mult, shift = quantize_multiplier(0.5)
    values = np.array([1, 3, 5, -1, -3, -5, 7, -7, 0], dtype=np.int64)
    got = multiply_by_quantized_multiplier(values, mult, shift)
    np.testing.assert_array_equal(got, [math.floor(v / 2 + 0.5) for v in values])


def test_rounding_divide_by_pot_rounds_half_away_from_zero() -> None:
    # Multiplier 0.25 = 0.5 * 2**-1: the final shift does the rounding.
    mult, shift = quantize_multiplier(0.25)
    assert shift == -1
    values = np.array([2, 6, 10, -2, -6, -10, 4, -4], dtype=np.int64)
    got = multiply_by_quantized_multiplier(values, mult, shift)
    expected = [math.copysign(math.floor(abs(v) / 4 + 0.5), v) for v in values]
    np.testing.assert_array_equal(got, expected)


def test_multiply_by_quantized_multiplier_close_to_real() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**20), 2**20, 2000)
    for real in (0.0123, 0.37, 0.99, 2.5):
        mult, shift = quantize_multiplier(real)
        got = multiply_by_quantized_multiplier(x, mult, shift)
        assert np.max(np.abs(got - x * real)) <= 0.5 + 1e-6 * np.abs(x * real).max() + 1
