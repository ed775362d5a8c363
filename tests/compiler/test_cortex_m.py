"""Cross-built firmware under QEMU (Cortex-M4, MPS2 AN386) against the host build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from graphs import tflite_style_int8

from helpers import need_service as require_tool
from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.cortex_m import elf_sizes, run_cortex_m, toolchain_missing


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    missing = toolchain_missing()
    require_tool(not missing, " and ".join(missing) or "the Arm toolchain")


def test_int8_cnn_on_cortex_m4_equals_host(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["int8"], tmp_path / "src", name="model")
    build = run_cortex_m(result, [x[:6]], tmp_path / "fw")
    qemu = np.stack([sample[0][0] for sample in build.outputs])
    np.testing.assert_array_equal(qemu, HostModel(result).run(x[:6]))
    sizes = build.sizes
    # The arena and the output buffer are the whole of RAM use (no heap, no other data).
    assert result.arena_bytes <= sizes.ram_bytes <= result.arena_bytes + 256
    assert sizes.sections.get(".data", 0) <= 128
    # Constants land in flash; code, startup and libm add less than 16 KB.
    assert sizes.rodata_bytes >= result.const_bytes
    assert 0 < build.code_overhead_bytes < 16 * 1024
    assert elf_sizes(build.elf) == sizes


def test_tflite_style_int8_on_cortex_m4(tmp_path: Path) -> None:
    result = compile_onnx(tflite_style_int8(), tmp_path / "src", name="tfl")
    x = np.random.default_rng(3).integers(-128, 128, (4, 8, 8, 3)).astype(np.int8)
    build = run_cortex_m(result, [x], tmp_path / "fw")
    qemu = np.stack([sample[0][0] for sample in build.outputs])
    np.testing.assert_array_equal(qemu, HostModel(result).run(x))


def test_float_cnn_on_cortex_m4_matches_host(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    result = compile_onnx(cnn_models["float"], tmp_path / "src", name="model")
    build = run_cortex_m(result, [x[:3]], tmp_path / "fw")
    qemu = np.stack([sample[0][0] for sample in build.outputs])
    host = HostModel(result).run(x[:3])
    # Same arithmetic; only the order of float additions may differ between compilers.
    np.testing.assert_allclose(qemu, host, rtol=1e-5, atol=1e-6 * np.abs(host).max())
    assert build.sizes.ram_bytes >= result.arena_bytes
