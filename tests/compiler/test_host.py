"""Generated C, built on the host, against the exact reference and ONNX Runtime.

int8 models are checked bit for bit against the exact reference
(:mod:`tinymlaas.compiler.reference`), and within one step of the QDQ graph as ONNX
specifies it (ONNX Runtime without graph optimizations: its fused int8 kernels differ
between CPUs). Float models are compared with ONNX Runtime.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import float_ops_graph, tflite_style_int8, unsupported_graph

from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.host import find_cc
from tinymlaas.compiler.reference import Reference
from tinymlaas.compiler.verify import agreement, output_lsb, reference_outputs
from tinymlaas.errors import InvalidInputError, UnsupportedModelError


def test_float_cnn_matches_onnxruntime(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["float"], tmp_path, name="model")
    got = HostModel(result).run(x[:256])
    (ref,) = reference_outputs(cnn_models["float"], x[:256])
    figures = agreement(got, ref)
    assert figures.max_rel_err <= 1e-4
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert not result.quantized
    assert result.kernel_calls["tm_conv2d_f32"] == 2


@pytest.mark.parametrize("variant", ["int8", "uint8"])
def test_int8_cnn_matches_the_exact_reference(variant: str, cnn_models, digits,
                                              tmp_path: Path) -> None:
    x, y = digits
    path = cnn_models[variant]
    result = compile_onnx(path, tmp_path, name=f"cnn_{variant}")
    assert result.quantized
    code = "s8s8" if variant == "int8" else "u8u8"
    assert result.kernel_calls[f"tm_qconv2d_{code}"] == 2
    assert result.kernel_calls[f"tm_qgemm_{code}"] == 1
    assert not any(k.startswith("tm_conv2d_f32") for k in result.kernel_calls)
    got = HostModel(result).run(x)
    # Bit for bit what the integer arithmetic gives, on any CPU.
    (exact,) = Reference(path).run(x)
    np.testing.assert_array_equal(got, exact)
    # The graph as ONNX specifies it (float, rounding half to even) differs by rounding only.
    (spec,) = reference_outputs(path, x, optimize=False)
    lsb = output_lsb(onnx.load(str(path)))
    assert lsb is not None
    figures = agreement(got, spec, lsb=lsb)
    assert figures.fraction_within_1lsb is not None
    assert figures.fraction_within_1lsb >= 0.99
    assert figures.max_abs_err <= 2 * lsb * (1 + 1e-3)
    assert np.mean(got.argmax(1) == spec.argmax(1)) >= 0.99
    assert np.mean(got.argmax(1) == y) >= 0.8


def test_int8_weights_stay_int8(cnn_models, tmp_path: Path) -> None:
    float_result = compile_onnx(cnn_models["float"], tmp_path / "f", name="f")
    int8_result = compile_onnx(cnn_models["int8"], tmp_path / "q", name="q")
    # int8 weights, int32 biases and per-channel multipliers: about a quarter of float.
    assert int8_result.const_bytes < 0.3 * float_result.const_bytes
    assert int8_result.arena_bytes <= float_result.arena_bytes // 4 + 64


def test_tflite_style_int8_io(tmp_path: Path) -> None:
    model = tflite_style_int8()
    result = compile_onnx(model, tmp_path, name="tfl")
    (spec_in,), (spec_out,) = result.inputs, result.outputs
    assert spec_in.shape == [1, 8, 8, 3] and spec_in.dtype == "int8"
    assert spec_in.scale == pytest.approx(0.02) and spec_in.zero_point == -3
    assert spec_out.dtype == "int8" and spec_out.zero_point == -128
    assert spec_out.scale == pytest.approx(1 / 256)
    header = result.header.read_text()
    assert "#define TFL_INPUT0_ZERO_POINT -3" in header
    assert "#define TFL_OUTPUT0_SCALE 0.00390625f" in header
    assert set(result.kernel_calls) == {"tm_transpose_b8", "tm_qconv2d_s8s8", "tm_qavgpool_s8s8",
                                        "tm_qgemm_s8s8", "tm_qsoftmax_tfl_s8s8"}
    # Expose the int8 logits too: softmax magnifies a 1-LSB logit difference (ONNX's float
    # semantics round half to even, TFLite arithmetic rounds half away from zero).
    model.graph.output.append(onnx.helper.make_tensor_value_info("logits_q", 3, None))
    result = compile_onnx(model, tmp_path / "two", name="tfl2")
    x = np.random.default_rng(1).integers(-128, 128, (256, 8, 8, 3)).astype(np.int8)
    probs, logits = HostModel(result).run(x)
    exact_probs, exact_logits = Reference(model).run(x)
    np.testing.assert_array_equal(logits, exact_logits)
    np.testing.assert_array_equal(probs, exact_probs)
    ref_probs, ref_logits = reference_outputs(model, x, optimize=False)
    figures = agreement(logits, ref_logits)
    assert figures.fraction_within_1lsb is not None and figures.fraction_within_1lsb >= 0.99
    assert agreement(probs, ref_probs).fraction_within_1lsb >= 0.97  # type: ignore[operator]
    assert np.mean(probs.argmax(1) == ref_probs.argmax(1)) >= 0.97


def test_float_ops_graph(tmp_path: Path) -> None:
    model = float_ops_graph()
    result = compile_onnx(model, tmp_path, name="ops")
    x = np.random.default_rng(2).normal(size=(32, 12)).astype(np.float32)
    got = HostModel(result).run(x)
    (ref,) = reference_outputs(model, x)
    assert agreement(got, ref).max_rel_err <= 1e-5


def test_generated_sources_are_plain_c99(cnn_models, tmp_path: Path) -> None:
    result = compile_onnx(cnn_models["int8"], tmp_path, name="model")
    assert result.header.name == "model.h" and result.source.name == "model.c"
    source = result.source.read_text()
    header = result.header.read_text()
    assert "malloc" not in source and "free(" not in source
    assert "int model_run(const float* in0, float* out0);" in header
    assert "#define MODEL_INPUT0_SIZE 64" in header
    assert "#define MODEL_OUTPUT0_SIZE 10" in header
    assert f"#define MODEL_ARENA_BYTES {result.arena_bytes}" in header
    assert re.search(r"static uint8_t model_arena\[\d+\]", source)
    # Weights are const int8 arrays (flash), never writable data.
    assert re.search(r"static const int8_t model_w\d+\[\d+\]", source)
    assert not re.search(r"^static (?!const)(?!uint8_t model_arena)\w+ model_w", source, re.M)
    includes = set(re.findall(r"#include <([^>]+)>", source))
    assert includes <= {"math.h", "stddef.h", "stdint.h", "string.h"}
    proc = subprocess.run(
        [find_cc(), "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-c",
         str(result.source), "-I", str(tmp_path), "-o", str(tmp_path / "model.o")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_symbolic_batch_is_one_and_host_loops(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["float"], tmp_path, name="model")
    assert result.inputs[0].shape == [1, 1, 8, 8]
    model = HostModel(result)
    single = model.run(x[:1])
    assert single.shape == (1, 10)
    batch = model.run(x[:5])
    np.testing.assert_array_equal(batch[:1], single)
    with pytest.raises(InvalidInputError):
        model.run(x[:2, :, :4])


def test_host_model_from_directory(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["float"], tmp_path / "src", name="model")
    again = HostModel(tmp_path / "src")
    np.testing.assert_array_equal(again.run(x[:3]), HostModel(result).run(x[:3]))


def test_unsupported_operators_are_named_before_generation(tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(UnsupportedModelError) as info:
        compile_onnx(unsupported_graph(), out, name="bad")
    assert info.value.details["nodes"] == ["my_sine", "my_cosine"]
    assert info.value.details["op_types"] == ["Cos", "Sin"]
    assert "my_sine" in info.value.message
    assert not out.exists()


def test_unsupported_attribute_names_the_node(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], name="pool3d", kernel_shape=[2, 2, 2])],
        "pool3d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError) as info:
        compile_onnx(model, tmp_path, name="p")
    assert info.value.details["nodes"] == ["pool3d"]
    assert "3-D" in info.value.message


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        compile_onnx(tmp_path / "nope.onnx", tmp_path, name="x")
