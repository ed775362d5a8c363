"""``tinymlaas runs layers RUN``: the per-layer profile of the model a run compiled, on this
machine (the same command against a server: tests/client/test_run_layers_api.py)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import small_cnn_onnx
from tinymlaas.compiler.profile import profile_model
from tinymlaas.errors import ConflictError, NotFoundError


def _run(cli, tmp_path: Path, name: str, steps: str) -> str:
    pipeline = tmp_path / f"{name}.yaml"
    pipeline.write_text(f"name: {name}\nmodel: cnn\ndataset: digits\nevaluate: false\n"
                        f"steps: {steps}\n")
    code, out, err = cli("run", pipeline, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def test_layers_of_a_compiled_run_and_refusals(cli, tmp_path: Path) -> None:
    path = small_cnn_onnx(tmp_path / "cnn.onnx")
    assert cli("models", "add", path, "--name", "cnn")[0] == 0
    assert cli("datasets", "add", "digits")[0] == 0
    compiled = _run(cli, tmp_path, "to-c",
                    "[{transformer: compile-c, params: {verify_samples: 0}}]")
    packaged = _run(cli, tmp_path, "to-zip", "[package-python]")

    code, out, err = cli("runs", "layers", compiled, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows == [r.model_dump() for r in profile_model(path)]
    assert [r["op_type"] for r in rows] == ["Conv+Relu", "MaxPool", "Conv+Relu", "Gemm"]
    assert sum(r["macs"] for r in rows) == 8192
    code, out, err = cli("runs", "layers", compiled)
    assert code == 0, err
    for text in ("Layers", "conv1 (+1)", "pool1", "1x8x4x4", "2,304"):
        assert text in out, text

    code, _, err = cli("runs", "layers", packaged)
    assert code == ConflictError.exit_code and "no per-layer profile" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("runs", "layers", "no-such-run")
    assert code == NotFoundError.exit_code and "not found" in err
