"""``tinymlaas analyze --layers``: the compiler's per-kernel profile, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import small_cnn_onnx


def test_layers_json_and_table(cli, tmp_path: Path) -> None:
    model = small_cnn_onnx(tmp_path / "cnn.onnx")
    code, out, err = cli("analyze", model, "--layers", "--json")
    assert code == 0, err
    body = json.loads(out)
    layers = body["layers"]
    assert [(r["step"], r["op_type"], r["nodes"]) for r in layers] == [
        (0, "Conv+Relu", ["conv1", "relu1"]), (1, "MaxPool", ["pool1"]),
        (2, "Conv+Relu", ["conv2", "relu2"]), (3, "Gemm", ["fc"])]
    assert [r["output_shape"] for r in layers] == [[1, 4, 8, 8], [1, 4, 4, 4], [1, 8, 4, 4],
                                                   [1, 10]]
    assert [r["live_bytes"] for r in layers] == [1280, 1280, 768, 552]
    # The columns add up to the whole-model figures of the same analysis.
    assert sum(r["macs"] for r in layers) == body["macs"] == 8192
    assert sum(r["flash_bytes"] for r in layers) == body["weight_bytes"] == 6504
    assert max(r["live_bytes"] for r in layers) == body["activation_bytes"] == 1280

    code, out, err = cli("analyze", model, "--layers")
    assert code == 0, err
    table = out.split("Layers", 1)[1]
    for text in ("Conv+Relu", "conv1 (+1)", "pool1", "1x4x8x8", "1.2 KiB", "5 KiB", "4,608"):
        assert text in table, text

    # Not asked for: no profile, no table.
    code, out, _ = cli("analyze", model, "--json")
    assert code == 0 and json.loads(out)["layers"] is None
    code, out, _ = cli("analyze", model)
    assert code == 0 and "Layers" not in out


def test_layers_of_a_registered_model_and_bad_refs(cli, tmp_path: Path) -> None:
    model = small_cnn_onnx(tmp_path / "cnn.onnx")
    code, _, err = cli("models", "add", model, "--name", "cnn")
    assert code == 0, err
    code, out, err = cli("analyze", "cnn", "--layers", "--json")
    assert code == 0, err
    assert [r["macs"] for r in json.loads(out)["layers"]] == [2304, 0, 4608, 1280]
    code, _, err = cli("analyze", "no-such-model", "--layers")
    assert code == 3 and "not found" in err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    code, _, err = cli("analyze", broken, "--layers")
    assert code == 2 and "Traceback" not in err
