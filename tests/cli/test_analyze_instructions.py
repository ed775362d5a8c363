"""``tinymlaas analyze --layers --instructions``: each kernel call's instructions on the
emulated Cortex-M4 next to its MACs and memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import linear_onnx, small_cnn_onnx
from helpers import need_service as require_tool
from tinymlaas.compiler import compile_onnx
from tinymlaas.compiler.cortex_m import toolchain_missing
from tinymlaas.compiler.instructions import measure_layer_instructions
from tinymlaas.compiler.profile import add_instructions, profile_model


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    missing = toolchain_missing()
    require_tool(not missing, " and ".join(missing) or "the Arm toolchain")


def test_layers_with_instructions(cli, tmp_path: Path) -> None:
    model = small_cnn_onnx(tmp_path / "cnn.onnx")
    code, out, err = cli("analyze", model, "--layers", "--instructions", "--json")
    assert code == 0, err
    layers = json.loads(out)["layers"]
    # The figures are the library's, for the cortex-m4 target and one random input (seed 0).
    result = compile_onnx(model, tmp_path / "src", target="cortex-m4", layer_marks=True)
    x = np.random.default_rng(0).normal(size=(1, 1, 8, 8)).astype(np.float32)
    counts = measure_layer_instructions(result, [x], tmp_path / "fw")
    assert [r["instructions"] for r in layers] == counts.per_layer
    assert layers == [r.model_dump() for r in
                      add_instructions(profile_model(model), model, tmp_path / "again")]
    conv1, pool, conv2, fc = (r["instructions"] for r in layers)
    assert conv2 > conv1 > fc > pool > 0

    code, out, err = cli("analyze", model, "--layers", "--instructions")
    assert code == 0, err
    table = out.split("Layers", 1)[1]
    assert "M4 instr" in table and f"{conv2:,}" in table
    # Without --instructions the column is not there, and nothing is counted.
    code, out, err = cli("analyze", model, "--layers", "--json")
    assert code == 0 and {r["instructions"] for r in json.loads(out)["layers"]} == {None}
    assert "M4 instr" not in cli("analyze", model, "--layers")[1]


def test_instructions_need_layers(cli, tmp_path: Path) -> None:
    model = linear_onnx(tmp_path / "linear.onnx")
    code, _, err = cli("analyze", model, "--instructions")
    assert code == 2 and "per layer" in err and len(err.strip().splitlines()) == 1
