"""The per-layer profile: one row per kernel call, totals equal to the planner's and the
static analysis' whole-model figures."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from graphs import float_ops_graph, residual_block, tflite_style_int8

from helpers import small_cnn_onnx
from tinymlaas.compiler.api import build_program
from tinymlaas.compiler.planner import plan_program
from tinymlaas.compiler.profile import op_types, profile_model, profile_program
from tinymlaas.devices.analysis import analyze_model


def test_small_cnn_rows_by_hand(tmp_path: Path) -> None:
    rows = profile_model(small_cnn_onnx(tmp_path / "cnn.onnx"))
    assert [(r.op_type, r.nodes, r.output_shape) for r in rows] == [
        ("Conv+Relu", ["conv1", "relu1"], [1, 4, 8, 8]),
        ("MaxPool", ["pool1"], [1, 4, 4, 4]),
        ("Conv+Relu", ["conv2", "relu2"], [1, 8, 4, 4]),
        ("Gemm", ["fc"], [1, 10]),  # Flatten is a view: no call
    ]
    # MACs: 8x8 outputs x 4 channels x 9 taps; 4x4 x 8 x (4 x 9); 10 x 128.
    assert [r.macs for r in rows] == [2304, 0, 4608, 1280]
    # Float32 weights + biases: 4x9+4, 8x36+8, 10x128+10 values.
    assert [r.flash_bytes for r in rows] == [160, 0, 1184, 5160]
    # Live: input 256 + conv1 1024; conv1 + pool 256; pool + conv2 512; conv2 + logits 40.
    assert [r.live_bytes for r in rows] == [1280, 1280, 768, 552]
    analysis = analyze_model(tmp_path / "cnn.onnx", layers=True)
    assert analysis.layers == rows
    assert analysis.activation_bytes == 1280 == max(r.live_bytes for r in rows)
    assert analysis.weight_bytes == sum(r.flash_bytes for r in rows) == 6504
    assert analysis.macs == sum(r.macs for r in rows) == 8192


@pytest.mark.parametrize("io", ["arena", "caller"])
@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("build", [residual_block, tflite_style_int8, float_ops_graph])
def test_totals_agree_with_the_planner(build, io: str, fuse: bool) -> None:
    model: onnx.ModelProto = build()
    program, prepared = build_program(model, io=io, fuse_residual=fuse)
    rows = profile_program(program, op_types(prepared))
    assert [r.step for r in rows] == list(range(len(program.kernels)))
    assert [r.kernel for r in rows] == [k.func for k in program.kernels]
    assert "?" not in {t for r in rows for t in r.op_type.split("+")}
    assert sum(r.flash_bytes for r in rows) == program.const_bytes() > 0
    assert sum(r.macs for r in rows) == program.macs()
    # The arena holds every live buffer at once, plus alignment and placement gaps.
    peak = max(r.live_bytes for r in rows)
    assert 0 < peak <= program.arena_bytes
    assert program.arena_bytes - peak < 16 * len(program.buffers())
    # Planning again changes nothing: the profile reads the plan, it does not make one.
    plan_program(program, io)
    again = profile_program(program, op_types(prepared))
    assert again == rows


def test_caller_io_leaves_inputs_and_outputs_out(tmp_path: Path) -> None:
    path = small_cnn_onnx(tmp_path / "cnn.onnx")
    arena, caller = profile_model(path, io="arena"), profile_model(path, io="caller")
    # The 256-byte input is live at the first call only in arena mode; the 40-byte
    # logits at the last.
    assert arena[0].live_bytes - caller[0].live_bytes == 256
    assert arena[-1].live_bytes - caller[-1].live_bytes == 40


def test_unsupported_operators_are_stand_in_rows() -> None:
    from graphs import unsupported_graph

    analysis = analyze_model(unsupported_graph(), layers=True)
    assert [(r.kernel, r.nodes, r.op_type) for r in analysis.layers] == [
        ("opaque_Sin", ["my_sine"], "Sin"), ("tm_unary_relu_f32", ["fine_relu"], "Relu"),
        ("opaque_Cos", ["my_cosine"], "Cos")]
    assert max(r.live_bytes for r in analysis.layers) == analysis.activation_bytes == 32
    assert analyze_model(residual_block()).layers is None  # not asked for
