"""Model input and output inside the arena (``io="arena"``, the default) against the
caller-owned arrays (``io="caller"``): same results bit for bit, less RAM, the generated
API (``<name>_input0()``, ``<name>_invoke()``, the copying ``<name>_run``) on the host and
on a Cortex-M4 under QEMU."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
from graphs import residual_block, tflite_style_int8
from pydantic import ValidationError

from helpers import need_service as require_tool
from tinymlaas.compiler import CompileResult, HostModel, compile_onnx
from tinymlaas.compiler.cortex_m import run_cortex_m, toolchain_missing
from tinymlaas.transformers.compile_c import CompileParams


def _both(model: object, tmp_path: Path, name: str) -> tuple[CompileResult, CompileResult]:
    arena = compile_onnx(model, tmp_path / "arena", name=name, io="arena")  # type: ignore[arg-type]
    caller = compile_onnx(model, tmp_path / "caller", name=name, io="caller")  # type: ignore[arg-type]
    return arena, caller


@pytest.mark.parametrize("kind", ["float", "int8", "uint8"])
def test_both_modes_give_identical_outputs_and_arena_mode_needs_less_ram(
        kind: str, cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    arena, caller = _both(cnn_models[kind], tmp_path, "cnn")
    assert (arena.io, caller.io) == ("arena", "caller")
    got_arena = HostModel(arena).run(x[:40])
    got_caller = HostModel(caller).run(x[:40])
    np.testing.assert_array_equal(got_arena, got_caller)
    # The input (1x1x8x8) and output (10 values) moved into the arena.
    io = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
             for s in [*caller.inputs, *caller.outputs])
    assert caller.io_bytes == io and arena.io_bytes == 0
    assert arena.arena_bytes + arena.io_bytes < caller.arena_bytes + caller.io_bytes
    assert arena.arena_bytes <= caller.arena_bytes + io


def test_residual_and_tflite_style_graphs_agree_between_modes(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(5, 4, 8, 8)).astype(np.float32)
    arena, caller = _both(residual_block(), tmp_path / "res", "res")
    np.testing.assert_array_equal(HostModel(arena).run(x), HostModel(caller).run(x))
    q = np.random.default_rng(2).integers(-128, 128, (5, 8, 8, 3)).astype(np.int8)
    arena, caller = _both(tflite_style_int8(), tmp_path / "tfl", "tfl")
    np.testing.assert_array_equal(HostModel(arena).run(q), HostModel(caller).run(q))


def test_generated_api_of_each_mode(cnn_models, digits, tmp_path: Path) -> None:
    x, _ = digits
    arena, caller = _both(cnn_models["int8"], tmp_path, "net")
    header = arena.header.read_text()
    assert "#define NET_IO_IN_ARENA 1" in header
    for line in ("net_input0_t* net_input0(void);", "net_output0_t* net_output0(void);",
                 "int net_invoke(void);", "#define net_input() net_input0()",
                 "int net_run(const float* in0, float* out0);"):
        assert line in header
    plain = caller.header.read_text()
    assert "#define NET_IO_IN_ARENA 0" in plain and "net_invoke" not in plain
    assert "net_input0(void)" not in plain

    # The copying net_run of arena mode equals the slot API HostModel uses.
    host = HostModel(arena)
    lib, sample = host._lib, np.ascontiguousarray(x[:1])
    run = lib.net_run
    run.argtypes, run.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
    out = np.zeros(tuple(arena.outputs[0].shape), np.dtype(arena.outputs[0].dtype))
    assert run(sample.ctypes.data, out.ctypes.data) == 0
    np.testing.assert_array_equal(out, host.run(x[:1]))
    # Both slots lie in one arena: their distance is less than its size.
    inputs, outputs = host.io_pointers
    assert len(inputs) == len(outputs) == 1
    assert abs(outputs[0] - inputs[0]) < arena.arena_bytes


def test_old_sources_without_io_field_read_as_caller_mode(cnn_models, tmp_path: Path) -> None:
    result = compile_onnx(cnn_models["float"], tmp_path, name="old", io="caller")
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["io"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert CompileResult.read_meta(tmp_path).io == "caller"
    assert HostModel(tmp_path).run(np.zeros((1, 1, 8, 8), np.float32)).shape \
        == tuple(result.outputs[0].shape)


def test_compile_c_step_takes_the_io_mode() -> None:
    assert CompileParams().io == "arena"
    assert CompileParams(io="caller").io == "caller"
    with pytest.raises(ValidationError):
        CompileParams(io="heap")


def test_cortex_m4_runs_both_modes_and_arena_mode_uses_less_ram(cnn_models, digits,
                                                                 tmp_path: Path) -> None:
    missing = toolchain_missing()
    require_tool(not missing, " and ".join(missing) or "the Arm toolchain")
    x, _ = digits
    arena, caller = _both(cnn_models["int8"], tmp_path, "model")
    host = HostModel(arena).run(x[:4])
    builds = {}
    for result in (arena, caller):
        build = run_cortex_m(result, [x[:4]], tmp_path / f"fw-{result.io}")
        np.testing.assert_array_equal(np.stack([s[0][0] for s in build.outputs]), host)
        builds[result.io] = build
    ram_arena, ram_caller = (builds[m].sizes.ram_bytes for m in ("arena", "caller"))
    # The caller's output array is gone; the input never took RAM in this harness (flash).
    assert arena.arena_bytes <= ram_arena < ram_caller
