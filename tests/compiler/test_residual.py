"""A residual Add fused into the convolution feeding it: same results, less RAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from compiler_models import quantize_qdq
from graphs import residual_block

from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.reference import Reference
from tinymlaas.compiler.verify import agreement, output_lsb, reference_outputs


def test_float_residual_block(tmp_path: Path) -> None:
    model = residual_block()
    fused = compile_onnx(model, tmp_path / "f", name="fused")
    plain = compile_onnx(model, tmp_path / "p", name="plain", fuse_residual=False)
    assert fused.kernel_calls == {"tm_conv2d_f32": 1, "tm_conv2d_add_f32": 1}
    assert "tm_binary_add_f32" in plain.kernel_calls
    # Fused, with the input and output outside the arena: only the first convolution's
    # output lives in it. Inside, the input (read again by the fused Add) and the result
    # join it: three tensors, which the unfused block needs at its second convolution too.
    caller = compile_onnx(model, tmp_path / "c", name="caller", io="caller")
    plain_caller = compile_onnx(model, tmp_path / "pc", name="plain_caller",
                                fuse_residual=False, io="caller")
    assert caller.arena_bytes == 4 * 8 * 8 * 4 < plain_caller.arena_bytes
    assert caller.io_bytes == plain_caller.io_bytes == 2 * 4 * 8 * 8 * 4
    assert fused.arena_bytes == 3 * 4 * 8 * 8 * 4 <= plain.arena_bytes
    assert fused.io_bytes == plain.io_bytes == 0
    x = np.random.default_rng(0).normal(size=(16, 4, 8, 8)).astype(np.float32)
    (ref,) = reference_outputs(model, x)
    assert agreement(HostModel(fused).run(x), ref).max_rel_err <= 1e-5
    assert agreement(HostModel(plain).run(x), ref).max_rel_err <= 1e-5


def test_int8_residual_block(tmp_path: Path) -> None:
    src = tmp_path / "block.onnx"
    onnx.save(residual_block(), str(src))
    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(32, 4, 8, 8)).astype(np.float32)
    path = quantize_qdq(src, tmp_path / "block_int8.onnx", calibration, per_channel=True)
    fused = compile_onnx(path, tmp_path / "f", name="fused")
    plain = compile_onnx(path, tmp_path / "p", name="plain", fuse_residual=False)
    assert fused.kernel_calls.get("tm_qconv2d_add_s8s8") == 1
    assert plain.kernel_calls.get("tm_qadd_s8s8") == 1
    assert fused.arena_bytes < plain.arena_bytes
    x = rng.normal(size=(64, 4, 8, 8)).astype(np.float32)
    got = HostModel(fused).run(x)
    # Same integer arithmetic either way: bit-identical, and what the exact reference gives.
    np.testing.assert_array_equal(got, HostModel(plain).run(x))
    np.testing.assert_array_equal(got, Reference(path).run(x)[0])
    np.testing.assert_array_equal(got, Reference(path, fuse_residual=False).run(x)[0])
    (ref,) = reference_outputs(path, x, optimize=False)
    figures = agreement(got, ref, lsb=output_lsb(onnx.load(str(path))))
    assert figures.fraction_within_1lsb is not None and figures.fraction_within_1lsb >= 0.99
