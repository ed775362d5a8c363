"""`models add` names the platform's default int8 as the next step, and `run` takes a
shipped template by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx


def test_models_add_suggests_auto_int8_and_run_takes_its_name(cli, services,
                                                              tmp_path: Path) -> None:
    path = write_digits_onnx(tmp_path / "logreg.onnx")
    code, out, err = cli("models", "add", str(path), "--name", "logreg")
    assert code == 0, err
    assert "next: tinymlaas run auto-int8 --model logreg --dataset DATASET" in out
    assert cli("datasets", "add", "digits")[0] == 0

    code, out, err = cli("run", "auto-int8", "--model", "logreg", "--dataset", "digits",
                         "--json")
    assert code == 0, err + out
    run = json.loads(out)
    assert [s["transformer"] for s in run["steps"]] == ["auto-int8"]
    assert run["status"] == "succeeded" and run["name"] == "auto-int8"
    # int8 weights of a logistic regression (biases stay float): 3x fewer weight bytes
    assert run["baseline"]["weight_bytes"] / run["result"]["weight_bytes"] > 3.0
    assert abs(run["result"]["accuracy"] - run["baseline"]["accuracy"]) <= 1.0

    code, out, err = cli("run", "no-such-template", "--model", "logreg")
    assert code == 2
    message = (out + err).strip()
    assert "no-such-template is neither a pipeline file nor a template" in message
    assert "auto-int8" in message and "export-auto-int8" in message
    assert len(message.splitlines()) == 1


@pytest.mark.slow
def test_a_pytorch_model_is_offered_the_export_first(cli, digits_cnn) -> None:
    code, out, err = cli("models", "add", str(digits_cnn[0]), "--name", "cnn")
    assert code == 0, err
    assert "next: tinymlaas run export-auto-int8 --model cnn --dataset DATASET" in out
