"""int8/uint8 ``DQ -> Softmax -> Q`` with TFLite's output quantization (scale 1/256, zero
point at the type's minimum) runs TFLite's integer softmax (gemmlowp fixed-point exp and
reciprocal): the C equals the numpy model bit for bit, on the host and on a Cortex-M4, the
numpy model follows exp() and 1/x, and ONNX Runtime agrees within 1 LSB."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import need_service
from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.ops.elementwise import tflite_softmax_params
from tinymlaas.compiler.ops.tflite_softmax import (
    exp_on_negative_values,
    get_reciprocal,
    softmax_tflite,
)
from tinymlaas.compiler.verify import agreement, reference_outputs


def _qdq_softmax(shape: list[int], in_scale: float, *, out_scale: float = 1 / 256,
                 dtype: int = TensorProto.INT8, axis: int = -1, opset: int = 13
                 ) -> onnx.ModelProto:
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    out_zero = int(np.iinfo(np_type).min) if out_scale == 1 / 256 else 0
    inits = [numpy_helper.from_array(np.array(in_scale, np.float32), "s_in"),
             numpy_helper.from_array(np.array(3, np_type), "z_in"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "s_out"),
             numpy_helper.from_array(np.array(out_zero, np_type), "z_out")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "z_in"], ["xf"]),
             helper.make_node("Softmax", ["xf"], ["p"], name="softmax", axis=axis),
             helper.make_node("QuantizeLinear", ["p", "s_out", "z_out"], ["y"])]
    graph = helper.make_graph(nodes, "qsoftmax",
                              [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9)


def _inputs(shape: list[int], dtype: np.dtype, count: int = 64, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, info.max + 1, (count, *shape)).astype(dtype)


def test_fixed_point_exp_and_reciprocal_follow_the_real_functions() -> None:
    # Q5.26 in, Q0.31 out: exp(0) saturates to the largest Q0.31 value.
    assert exp_on_negative_values(np.array([0]))[0] == 2**31 - 1
    xs = -np.linspace(0, 31.9, 500)
    got = exp_on_negative_values(np.round(xs * 2**26).astype(np.int64)) / 2**31
    np.testing.assert_allclose(got, np.exp(xs), rtol=0, atol=3e-7)
    # GetReciprocal of x in Q12.19: 1/x = scale * 2^-bits_over_unit.
    values = np.array([1.0, 1.25, 3.0, 7.5, 100.0, 4095.0])
    scale, over = get_reciprocal(np.round(values * 2**19).astype(np.int64), 12)
    np.testing.assert_allclose(scale / 2**31 / 2.0**over, 1 / values, rtol=1e-8)


def test_tflite_scaling_parameters() -> None:
    # TFLite: multiplier of beta * scale * 2^26, left shift, and diff_min from the radius.
    mult, shift, diff_min = tflite_softmax_params(0.0625)
    assert (mult, shift) == (2**30, 23)  # 0.0625 * 2^26 = 2^22 = 0.5 * 2^23
    assert diff_min == -math.floor(31 * 2**26 / 2**23) == -248


@pytest.mark.parametrize(("shape", "in_scale", "axis"), [
    ([1, 10], 0.1, -1),
    ([2, 7], 0.5, -1),
    ([3, 5, 4], 0.02, 1),
    ([1, 33], 1.7, -1),
])
def test_int8_softmax_is_tflite_arithmetic(shape: list[int], in_scale: float, axis: int,
                                          tmp_path: Path) -> None:
    model = _qdq_softmax(shape, in_scale, axis=axis)
    result = compile_onnx(model, tmp_path, name="sm", simplify=False)
    assert result.kernel_calls == {"tm_qsoftmax_tfl_s8s8": 1}
    assert (result.outputs[0].scale, result.outputs[0].zero_point) == (1 / 256, -128)
    x = _inputs(shape, np.dtype(np.int8))
    host = HostModel(result)
    got = np.stack([host.run(sample) for sample in x])
    mult, shift, diff_min = tflite_softmax_params(in_scale)
    expected = softmax_tflite(x, mult, shift, diff_min, -128, 127, axis=axis % len(shape) + 1)
    np.testing.assert_array_equal(got, expected)
    ref = np.stack([reference_outputs(model, sample)[0] for sample in x])
    figures = agreement(got, ref)
    assert figures.fraction_within_1lsb == 1.0 and figures.exact_fraction >= 0.9
    # Probabilities: each row sums to about 1 (256 steps of 1/256).
    sums = (got.astype(np.int64) + 128).sum(axis=axis % len(shape) + 1)
    assert np.all(np.abs(sums - 256) <= shape[axis])
    assert np.all(got.max(axis=axis % len(shape) + 1) > -128)


def test_uint8_and_other_output_scales(tmp_path: Path) -> None:
    model = _qdq_softmax([2, 12], 0.3, dtype=TensorProto.UINT8)
    result = compile_onnx(model, tmp_path / "u8", name="sm", simplify=False)
    assert result.kernel_calls == {"tm_qsoftmax_tfl_u8u8": 1}
    x = _inputs([2, 12], np.dtype(np.uint8))
    mult, shift, diff_min = tflite_softmax_params(0.3)
    host = HostModel(result)
    np.testing.assert_array_equal(np.stack([host.run(sample) for sample in x]),
                                  softmax_tflite(x, mult, shift, diff_min, 0, 255))
    # Another output scale is not TFLite's convention: the float-table kernel.
    other = _qdq_softmax([2, 12], 0.3, out_scale=1 / 200)
    result = compile_onnx(other, tmp_path / "other", name="sm", simplify=False)
    assert result.kernel_calls == {"tm_qsoftmax_s8s8": 1}


def test_tflite_softmax_on_cortex_m4_equals_host(tmp_path: Path) -> None:
    from tinymlaas.compiler.cortex_m import run_cortex_m, toolchain_missing

    missing = toolchain_missing()
    need_service(not missing, " and ".join(missing) or "the Arm toolchain")
    model = _qdq_softmax([1, 40], 0.08)
    result = compile_onnx(model, tmp_path / "src", name="sm", simplify=False)
    x = _inputs([40], np.dtype(np.int8), count=6, seed=9)
    build = run_cortex_m(result, [x], tmp_path / "fw")
    qemu = np.stack([sample[0] for sample in build.outputs]).reshape(6, 40)
    np.testing.assert_array_equal(qemu, HostModel(result).run(x))
