"""Static analysis and device fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.devices import analyze_model, fit_verdict, get_device, supported_by
from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError


def _mlp(hidden: int, inputs: int = 64, classes: int = 10, batch: str | int = "N",
         extra_op: str | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(inputs, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(hidden, classes)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y0"]),
        helper.make_node(extra_op or "Identity", ["y0"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_float_mlp_figures() -> None:
    analysis = analyze_model(_mlp(hidden=32))
    assert analysis.parameters == 64 * 32 + 32 + 32 * 10
    assert analysis.weight_bytes == 4 * (64 * 32 + 32 + 32 * 10)
    # MatMul+Add+Relu fuse into one kernel: a single 32-float intermediate, next to the
    # 64-float input, whose space the 10-float output takes after it (all in the arena).
    assert analysis.activation_bytes == (32 + 64) * 4
    assert analysis.io_bytes == 0
    assert analysis.macs == 64 * 32 + 32 * 10
    assert analysis.memory_source == "compiler"
    assert analysis.unsupported == {"c": [], "onnxruntime": [], "tflite-micro": []}
    assert analysis.fit is None


def test_int8_weights_count_one_byte(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "compiler"))
    from graphs import tflite_style_int8

    analysis = analyze_model(tflite_style_int8())
    assert analysis.quantized
    # int8 weights, int32 biases, per-channel multipliers and shifts (TFLite's integer
    # softmax needs no table): nothing is stored as float32 weights.
    weights, biases = 8 * 3 * 9 + 8 * 9 + 8 * 5, 4 * (8 + 8 + 5)
    requant, transpose = 4 * 2 * (8 + 8 + 5), 4 * 2 * 2
    assert analysis.weight_bytes == weights + biases + requant + transpose
    assert analysis.io_bytes == 0  # the 8x8x3 input and 5 outputs are in the arena


def test_fit_verdict_with_margins() -> None:
    analysis = analyze_model(_mlp(hidden=256), "arduino-nano-33-ble-sense")
    fit = analysis.fit
    assert fit is not None and fit.fits and not fit.reasons
    assert fit.flash_available_bytes == 1024 * 1024
    assert 0 < fit.flash_margin_pct < 100 and 0 < fit.ram_margin_pct < 100
    expected = analysis.macs / (64e6 * 0.5) * 1000
    assert fit.latency_ms_estimate == pytest.approx(expected)
    assert "estimate" in fit.latency_basis


def test_too_big_for_a_small_board_says_why() -> None:
    tiny = Device(name="tiny-board", arch="cortex-m0plus", clock_mhz=48, ram_kb=4,
                  flash_kb=32, runtimes=["c"])
    analysis = analyze_model(_mlp(hidden=512))
    fit = fit_verdict(analysis, tiny)
    assert not fit.fits
    assert fit.flash_margin_pct < 0
    assert any("flash" in r and "over" in r for r in fit.reasons)
    assert fit.ram_needed_bytes < 4 * 1024 and fit.ram_margin_pct > 0


def test_runtime_support_is_reported() -> None:
    analysis = analyze_model(_mlp(hidden=16, extra_op="Sin"), get_device("raspberry-pi-4"))
    assert analysis.unsupported["c"] == ["Sin"]
    assert analysis.unsupported["onnxruntime"] == []
    assert "Sin" in analysis.unsupported["tflite-micro"]
    assert analysis.fit is not None and not analysis.fit.fits
    assert any("c does not support Sin" in r for r in analysis.fit.reasons)
    ort = fit_verdict(analysis, "raspberry-pi-4", runtime="onnxruntime")
    assert ort.fits
    mcu = fit_verdict(analysis, "arduino-nano-33-ble-sense", runtime="onnxruntime")
    assert not mcu.fits


def test_table_rows_render() -> None:
    rows = dict(analyze_model(_mlp(hidden=8), "stm32f746-discovery").to_table_rows())
    assert rows["fits"] == "yes"
    assert rows["ops on c"] == "all supported"
    assert "estimate" in " ".join(rows) or "latency (estimate)" in rows


def test_support_table() -> None:
    assert supported_by("c", "Conv") and supported_by("tflite-micro", "Conv")
    assert not supported_by("c", "LSTM") and supported_by("onnxruntime", "LSTM")
    assert not supported_by("c", "Conv", domain="com.example")


def test_unknown_runtime() -> None:
    with pytest.raises(InvalidInputError):
        analyze_model(_mlp(hidden=8), runtime="tvm")
