"""``optimize`` on a regression model prints its per-layer sensitivity in MAE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import mlp_onnx
from tinymlaas.evaluation.runtime import OnnxRunner

pytestmark = pytest.mark.slow


def test_a_regression_search_reports_each_layer_in_mae(cli, tmp_path: Path) -> None:
    path = mlp_onnx(tmp_path / "mlp.onnx", 1)
    X = np.random.default_rng(7).normal(size=(160, 16)).astype(np.float32)
    np.savez(tmp_path / "values.npz", X=X, y=OnnxRunner(path).predict(X))
    assert cli("models", "add", path, "--name", "mlp", "--task", "regression")[0] == 0
    assert cli("datasets", "add", tmp_path / "values.npz", "--task", "regression")[0] == 0
    code, out, err = cli("optimize", "--model", "mlp", "--dataset", "values", "--budget",
                         "mae=0", "--max-trials", "1", "--json")
    assert code == 0, err
    search = json.loads(out)
    assert search["recommended"] is None
    report = {(s["layer"], s["probe"]): s for s in search["sensitivity"]}
    fc2 = report[("fc2", "quantize-int8")]
    assert fc2["metric"] == "mae" and fc2["drop"] == pytest.approx(fc2["value"], abs=1e-6)
    assert fc2["value"] > 0 and fc2["advice"].startswith("keep in float")

    code, out, err = cli("searches", "show", search["id"])
    assert code == 0, err
    table = out[out.index("Per-layer sensitivity"):]
    assert "MAE" in table and "accuracy" not in table
    row = next(line for line in table.splitlines() if "fc2" in line and "quantize" in line)
    assert f"{fc2['value']:.4f}" in row and f"{fc2['drop']:+.4f}" in row
