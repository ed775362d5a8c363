"""The exact integer reference: hand-computed cases, the fidelity bar, and a corrupted build.

TFLite's requantization (``MultiplyByQuantizedMultiplier``) rounds a doubling high multiply
half up and then divides by a power of two rounding half away from zero; ONNX's
``QuantizeLinear`` rounds half to even in float. The hand-computed cases below sit exactly
on those ties, so they tell the two apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.ckernels import BINARY_EXPR, UNARY_EXPR, kernel_source
from tinymlaas.compiler.reference import KERNELS, Reference
from tinymlaas.compiler.verify import check_fidelity, fidelity, verify_outputs
from tinymlaas.errors import InvalidInputError, StepFailedError


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _conv_1x1() -> onnx.ModelProto:
    """int8 [1,1,1,5] -> DQ (scale 1, zero point 3) -> 1x1 Conv, two output channels with
    per-channel weight scales 0.25 and 0.125 (weights 1 and 127, zero bias) -> Q (scale 1,
    zero point 0) -> int8. The requantization multipliers are 0.25 and 0.125."""
    inits = [
        _const("sx", np.array(1.0, np.float32)), _const("zx", np.array(3, np.int8)),
        _const("w", np.array([1, 127], np.int8).reshape(2, 1, 1, 1)),
        _const("sw", np.array([0.25, 0.125], np.float32)),
        _const("zw", np.zeros(2, np.int8)),
        _const("b", np.zeros(2, np.int32)), _const("sb", np.array([0.25, 0.125], np.float32)),
        _const("zb", np.zeros(2, np.int32)),
        _const("sy", np.array(1.0, np.float32)), _const("zy", np.array(0, np.int8)),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], name="conv"),
        helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv1x1", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 2, 1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _requant(n: int, in_scale: float, out_scale: float, out_zero: int) -> onnx.ModelProto:
    """int8 [1, n] -> DQ (in_scale, 0) -> Q (out_scale, out_zero) -> int8."""
    inits = [_const("si", np.array(in_scale, np.float32)), _const("zi", np.array(0, np.int8)),
             _const("so", np.array(out_scale, np.float32)),
             _const("zo", np.array(out_zero, np.int8))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["xf"]),
             helper.make_node("QuantizeLinear", ["xf", "so", "zo"], ["y"])]
    graph = helper.make_graph(
        nodes, "requant", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_conv_1x1_per_channel_by_hand(tmp_path: Path) -> None:
    model = _conv_1x1()
    x = np.array([5, 9, 1, 13, -9], np.int8).reshape(1, 1, 1, 5)  # x - 3 = 2, 6, -2, 10, -12
    (got,) = Reference(model).run(x)
    # Channel 0: weight 1, multiplier 0.25: 0.5, 1.5, -0.5, 2.5, -3 rounded half away
    # from zero. Channel 1: weight 127, multiplier 0.125: 31.75, 95.25, -31.75, then
    # 158.75 and -190.5 saturate to the int8 range.
    expected = np.array([[1, 2, -1, 3, -3], [32, 95, -32, 127, -128]], np.int8)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got.reshape(2, 5), expected)
    # ONNX's float semantics round the ties of channel 0 to even: 0, 2, 0, 2.
    (onnx_float,) = ReferenceEvaluator(model).run(None, {"x": x})
    differs = onnx_float.reshape(2, 5) != expected
    assert differs.tolist() == [[True, False, True, True, False], [False] * 5]
    # The generated C computes the same, bit for bit.
    result = compile_onnx(model, tmp_path, name="conv1x1", simplify=False)
    assert result.kernel_calls == {"tm_qconv2d_s8s8": 1}
    np.testing.assert_array_equal(HostModel(result).run(x), got)


def test_requantization_rounds_like_tflite(tmp_path: Path) -> None:
    # Multiplier 0.25 = 2**30 * 2**-31 * 2**-1: a doubling high multiply that rounds half
    # up (toward +inf), then a shift by one that rounds half away from zero.
    x = np.array([[2, 6, -2, -6, 10, -10, 3, 1, -1]], np.int8)
    model = _requant(x.shape[1], 1.0, 4.0, 0)
    (got,) = Reference(model).run(x)
    # 0.5, 1.5, -0.5, -1.5, 2.5, -2.5 away from zero; 0.75 -> 1; 0.25 is rounded twice
    # (half up to 0.5, then away from zero to 1) while -0.25 gives 0, as in TFLite.
    np.testing.assert_array_equal(got, [[1, 2, -1, -2, 3, -3, 1, 1, 0]])
    (onnx_float,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(onnx_float, [[0, 2, 0, -2, 2, -2, 1, 0, 0]])
    result = compile_onnx(model, tmp_path, name="requant", simplify=False)
    assert result.kernel_calls == {"tm_requant_s8s8": 1}
    np.testing.assert_array_equal(HostModel(result).run(x), got)


def test_requantization_saturates_to_int8() -> None:
    # Multiplier 4 (a left shift), output zero point -100.
    model = _requant(5, 1.0, 0.25, -100)
    x = np.array([[56, 57, 58, -7, -8]], np.int8)
    (got,) = Reference(model).run(x)
    np.testing.assert_array_equal(got, [[124, 127, 127, -128, -128]])


def test_batched_inputs_run_at_once_and_bad_inputs_are_refused() -> None:
    model = _requant(3, 1.0, 2.0, 0)
    reference = Reference(model)
    batch = np.array([[4, -4, 9], [1, 2, 3]], np.int8)
    (got,) = reference.run(batch)
    np.testing.assert_array_equal(got, [[2, -2, 5], [1, 1, 2]])
    np.testing.assert_array_equal(got[1:], reference.run(batch[1:])[0])
    many = np.random.default_rng(0).integers(-128, 128, (150, 3)).astype(np.int8)
    (all_at_once,) = reference.run(many)  # interpreted in chunks of samples
    assert all_at_once.shape == (150, 3)
    np.testing.assert_array_equal(all_at_once[149:], reference.run(many[149:])[0])
    np.testing.assert_array_equal(all_at_once[:64], reference.run(many[:64])[0])
    with pytest.raises(InvalidInputError, match="must have shape"):
        reference.run(np.zeros((1, 4), np.int8))
    with pytest.raises(InvalidInputError, match="must be int8"):
        reference.run(np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidInputError, match="takes 1 input"):
        reference.run()


def test_every_c_kernel_has_a_reference() -> None:
    """Each kernel of the C library (but the convolution tile helper) is modelled."""
    import tinymlaas.compiler.ckernels as ckernels

    bases = {name.removeprefix("tm_").removesuffix("_f32") for name in ckernels._FIXED}
    bases |= set(ckernels._TEMPLATES)
    bases |= {f"unary_{op}" for op in UNARY_EXPR} | {f"binary_{op}" for op in BINARY_EXPR}
    bases -= {"convtile"}
    assert bases <= set(KERNELS), sorted(bases - set(KERNELS))
    assert "tm_qconv2d_s8s8" in kernel_source("tm_qconv2d_s8s8")


def test_fidelity_bar() -> None:
    ref = np.zeros(1000, np.int8)
    assert fidelity(ref.copy(), ref).passed
    near = ref.copy()
    near[:10] = 1  # 99.0 % exact, all within 1 LSB: passes
    check = fidelity(near, ref, output="logits")
    assert check.passed and check.exact_fraction == 0.99 and check.max_lsb_diff == 1
    near[10] = -1  # 98.9 % exact
    check = fidelity(near, ref, output="logits")
    assert not check.passed
    far = ref.copy()
    far[0] = 2  # 99.9 % exact, but one element 2 LSB off
    assert not fidelity(far, ref).passed
    with pytest.raises(StepFailedError) as info:
        check_fidelity([fidelity(ref, ref, output="a"), fidelity(far, ref, output="probs")])
    message = info.value.message
    assert "'probs'" in message and "99.90% of 1000 elements exact" in message
    assert "max 2 LSB off" in message and "'a'" not in message
    assert info.value.details["outputs"][0]["output"] == "probs"
    # A float output behind DequantizeLinear counts in steps of its scale.
    scaled = fidelity(np.float32(0.5) * near, np.float32(0.5) * ref, lsb=0.5)
    assert scaled.max_lsb_diff == 1 and not scaled.passed
    # A plain float output is judged by its relative error.
    f = np.linspace(-1, 1, 100).astype(np.float32)
    assert fidelity(f + np.float32(1e-6), f).passed
    assert not fidelity(f + np.float32(1e-3), f).passed


def corrupt_weights(source: Path) -> None:
    """Negate the first values of the first int8 weight array of a generated ``.c`` file."""
    text = source.read_text()
    match = re.search(r"static const int8_t \w+_w\d+\[\d+\] = \{\n  ([^\n]*)", text)
    assert match is not None
    values = [int(v) for v in match.group(1).rstrip(",").split(",")]
    flipped = ", ".join(str(-v if v != -128 else 127) for v in values)
    assert flipped != match.group(1).rstrip(",")
    text = text[:match.start(1)] + flipped + ("," if match.group(1).endswith(",") else "") \
        + text[match.end(1):]
    source.write_text(text)


def test_corrupted_weight_fails_verification(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    x = x[:64]
    path = cnn_models["int8"]
    result = compile_onnx(path, tmp_path, name="cnn")
    model = onnx.load(str(path))
    exact = Reference(path).run(x)
    checks = verify_outputs(HostModel(result).run(x), exact, model)
    assert [c.passed for c in checks] == [True] and checks[0].exact_fraction == 1.0
    check_fidelity(checks)
    corrupt_weights(result.source)
    checks = verify_outputs(HostModel(tmp_path).run(x), exact, model)
    assert not checks[0].passed and checks[0].max_lsb_diff is not None
    assert checks[0].max_lsb_diff > 1
    with pytest.raises(StepFailedError, match=rf"output '{model.graph.output[0].name}': "
                                              r"\d+\.\d\d% of 640 elements exact, max \d+ LSB"):
        check_fidelity(checks)
