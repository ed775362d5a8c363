"""Instructions per inference on the emulated Cortex-M4 (QEMU -icount + board timers)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from helpers import linear_onnx, small_cnn_onnx
from helpers import need_service as require_tool
from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.cortex_m import build_cortex_m, run_cortex_m, toolchain_missing
from tinymlaas.compiler.instructions import (
    _instructions,
    _ticks,
    count_instructions,
    measure_instructions,
    measure_layer_instructions,
)
from tinymlaas.compiler.profile import profile_model
from tinymlaas.errors import InvalidInputError


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    missing = toolchain_missing()
    require_tool(not missing, " and ".join(missing) or "the Arm toolchain")


def _linear(tmp_path: Path, features: int):
    path = linear_onnx(tmp_path / f"linear{features}.onnx", features=features, classes=16)
    return compile_onnx(path, tmp_path / f"src{features}", name="model")


def test_count_repeats_run_to_run_and_build_to_build(tmp_path: Path) -> None:
    result = _linear(tmp_path, 64)
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    build = build_cortex_m(result, [x], tmp_path / "fw")
    first = count_instructions(build)
    second = count_instructions(build)
    rebuilt = measure_instructions(result, [x], tmp_path / "fw2")
    assert first == second == rebuilt
    # Float code without data-dependent branches: every sample costs the same.
    assert len(first.per_inference) == 3
    assert len(set(first.per_inference)) == 1
    # 1,024 multiply-adds: at least one instruction each (no SIMD on float), and the
    # loop overhead of -Os code stays within a few more.
    assert result.macs == 64 * 16
    assert result.macs <= first.instructions <= 16 * result.macs
    assert 0 <= first.bracket <= 4


def test_twice_the_work_counts_about_twice_the_instructions(tmp_path: Path) -> None:
    small, large = _linear(tmp_path, 64), _linear(tmp_path, 128)
    rng = np.random.default_rng(1)
    n_small = measure_instructions(small, [rng.normal(size=(1, 64)).astype(np.float32)],
                                   tmp_path / "small").instructions
    n_large = measure_instructions(large, [rng.normal(size=(1, 128)).astype(np.float32)],
                                   tmp_path / "large").instructions
    assert large.macs == 2 * small.macs
    assert 1.7 * n_small <= n_large <= 2.05 * n_small


def test_int8_cnn_count_and_outputs_from_one_firmware(cnn_models, digits,
                                                      tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["int8"], tmp_path / "src", name="model")
    # The timed harness still prints the outputs, equal to the host build.
    build = run_cortex_m(result, [x[:2]], tmp_path / "fw")
    qemu = np.stack([sample[0][0] for sample in build.outputs])
    np.testing.assert_array_equal(qemu, HostModel(result).run(x[:2]))
    counts = count_instructions(build)
    assert len(counts.per_inference) == 2
    assert count_instructions(build) == counts
    assert result.macs <= counts.instructions <= 40 * result.macs


def test_long_runs_recover_the_wraps_of_the_fine_timer() -> None:
    top, wrap = (1 << 32) - 1, 1 << 32

    def read(ticks: int) -> tuple[int, int]:  # the two down-counters after ``ticks``
        return top - ticks % wrap, top - ticks // 256

    for ticks in (0, 7, 3_200_000_005, 5_000_000_000, 2 * wrap + 100, 9 * wrap - 1):
        assert _ticks(*read(ticks)) == ticks
    # The coarse counter started a few ticks apart: still the same wrap.
    fine, coarse = read(5_000_000_000)
    assert _ticks(fine, coarse + 3) == _ticks(fine, coarse - 3) == 5_000_000_000
    # Ticks to instructions: 1.6 ticks each, floor(1.6 n) inverted exactly.
    assert [_instructions(n * 8 // 5) for n in range(12)] == list(range(12))


def test_per_layer_counts_add_up_to_the_inference(tmp_path: Path) -> None:
    path = small_cnn_onnx(tmp_path / "cnn.onnx")
    x = np.random.default_rng(2).normal(size=(2, 1, 8, 8)).astype(np.float32)
    plain = compile_onnx(path, tmp_path / "plain", name="model")
    marked = compile_onnx(path, tmp_path / "marked", name="model", layer_marks=True)
    assert "TM_LAYER_END" not in plain.source.read_text()
    calls = re.findall(r"^  TM_LAYER_END\((\d+)\);$", marked.source.read_text(), re.M)
    assert calls == [str(step) for step in range(marked.kernels)]
    # Without the hook the marks are empty: same outputs on the host.
    np.testing.assert_array_equal(HostModel(marked).run(x), HostModel(plain).run(x))
    with pytest.raises(InvalidInputError, match="layer_marks"):
        measure_layer_instructions(plain, [x], tmp_path / "refused")

    whole = measure_instructions(plain, [x], tmp_path / "fw-plain")
    layers = measure_layer_instructions(marked, [x], tmp_path / "fw-marked")
    assert whole.per_layer == []
    # The marks' own cost is taken out: the inference counts what the plain build does.
    assert layers.per_inference == whole.per_inference
    assert 0 < layers.layer_mark < 40
    rows = profile_model(path)
    assert len(layers.per_layer) == len(rows) == 4
    assert 0 <= whole.per_inference[0] - sum(layers.per_layer) < 100  # call and return
    by_op = dict(zip([r.op_type for r in rows], layers.per_layer, strict=False))
    # The second convolution has twice the first's MACs; the pool has none.
    conv1, pool, conv2, fc = layers.per_layer
    assert rows[2].macs == 2 * rows[0].macs
    assert conv2 > conv1 > fc > pool > 0 and by_op["MaxPool"] == pool
    assert measure_layer_instructions(marked, [x], tmp_path / "again") == layers
