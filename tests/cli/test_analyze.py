"""``tinymlaas analyze``: static analysis and a fit verdict from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import linear_onnx


def test_analyze_a_file_against_devices(cli, tmp_path: Path, digits_onnx: Path) -> None:
    code, out, err = cli("analyze", digits_onnx, "--device", "stm32f746-discovery", "--json")
    assert code == 0, err
    analysis = json.loads(out)
    assert analysis["macs"] == 1_330_432 and analysis["parameters"] == 151_306
    assert analysis["weight_bytes"] >= 151_306 * 4
    assert analysis["fit"]["fits"] and analysis["unsupported"]["c"] == []
    code, _, err = cli("devices", "add", "tiny", "--arch", "cortex-m0plus", "--clock-mhz", "48",
                       "--ram-kb", "16", "--flash-kb", "128")
    assert code == 0, err
    code, out, _ = cli("analyze", digits_onnx, "--device", "tiny")
    assert code == 1
    assert "fits" in out and "no" in out and "flash" in out.lower()


def test_analyze_registered_models_and_errors(cli, tmp_path: Path, digits_cnn) -> None:
    code, _, err = cli("models", "add", linear_onnx(tmp_path / "lin.onnx"), "--name", "lin")
    assert code == 0, err
    code, out, _ = cli("analyze", "lin", "--json")
    assert json.loads(out)["macs"] == 640
    code, _, _ = cli("models", "add", digits_cnn[0], "--name", "cnn")
    code, _, err = cli("analyze", "cnn")
    assert code == 2 and "export-onnx first" in err
    code, _, err = cli("analyze", "missing-thing")
    assert code == 3 and "not found" in err
