"""The command line, end to end in-process, including every kind of bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from helpers import linear_onnx, png_bytes, write_zip


def blobs(settings) -> list[Path]:
    root = settings.resolved_artifacts_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_models_and_datasets_commands(ready) -> None:
    code, out, _ = ready("models", "list")
    assert code == 0 and "digits-cnn" in out and "torch-exported" in out
    code, out, _ = ready("models", "show", "digits-cnn", "--json")
    assert json.loads(out)["parameters"] == 151498
    code, out, _ = ready("datasets", "show", "digits")
    assert code == 0 and "test 20%" in out
    code, out, _ = ready("datasets", "list", "--json")
    assert [d["name"] for d in json.loads(out)] == ["digits"]


def test_transformers_commands(cli) -> None:
    code, out, _ = cli("transformers", "list")
    assert code == 0 and "quantize-static" in out and "calibration" in out
    code, out, _ = cli("transformers", "show", "quantize-static")
    assert code == 0
    for text in ("per_channel", "minmax | entropy | percentile", "qdq | qoperator", "256"):
        assert text in out
    code, _, err = cli("transformers", "show", "nope")
    assert code == 3 and "unknown transformer 'nope'; known: " in err


def test_devices_commands(cli) -> None:
    code, out, _ = cli("devices", "list", "--json")
    names = [d["name"] for d in json.loads(out)]
    assert code == 0 and len(names) >= 10
    code, out, err = cli("devices", "add", "lab-board", "--arch", "cortex-m4",
                         "--clock-mhz", "64", "--ram-kb", "256", "--flash-kb", "1024")
    assert code == 0, err
    code, out, _ = cli("devices", "show", "lab-board", "--json")
    assert json.loads(out)["custom"] is True
    code, _, err = cli("devices", "add", "bad", "--arch", "x", "--clock-mhz", "-1",
                       "--ram-kb", "1", "--flash-kb", "1")
    assert code == 2 and "clock_mhz" in err


def test_run_compare_export(ready, examples_dir: Path, tmp_path: Path) -> None:
    code, out, err = ready("run", examples_dir / "static-int8.yaml")
    assert code == 0, out + err
    assert "succeeded" in out and "3. quantize-static" in out
    code, out, err = ready("run", examples_dir / "keep-head-float.yaml")
    assert code == 0, out + err
    runs = json.loads(ready("runs", "list", "--json")[1])
    assert [r["name"] for r in runs] == ["keep-head-float", "static-int8"]
    static = runs[1]
    code, out, _ = ready("runs", "show", static["id"], "--log")
    assert code == 0 and "calibrating on 256 samples" in out
    code, out, _ = ready("compare", "static-int8", "keep-head-float", "--json")
    rows = json.loads(out)
    assert rows[0]["size_ratio"] > 3.5 and rows[1]["size_ratio"] < rows[0]["size_ratio"]
    assert abs(rows[0]["accuracy_change"]) <= 1.0
    code, out, _ = ready("compare", "static-int8", "keep-head-float")
    assert code == 0 and "size ×" in out and "static-int8" in out
    code, out, _ = ready("export", "static-int8", "--out", tmp_path / "exported")
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "exported").iterdir())
    assert files == ["lineage.json", "metrics.json", "model.onnx", "pipeline.yaml"]
    metrics = json.loads((tmp_path / "exported" / "metrics.json").read_text())
    assert metrics["result"]["file_bytes"] == (tmp_path / "exported" / "model.onnx").stat().st_size
    lineage = json.loads((tmp_path / "exported" / "lineage.json").read_text())
    assert [a["kind"] for a in lineage] == ["onnx", "onnx", "onnx", "torch-exported"]


def test_a_crashing_step_fails_its_run_and_the_cli_carries_on(ready, tmp_path: Path) -> None:
    pipeline = tmp_path / "crash.yaml"
    pipeline.write_text("name: crash\nmodel: digits-cnn\ndataset: digits\n"
                        "steps: [export-onnx, test-crash]\n")
    code, out, _ = ready("run", pipeline)
    assert code == 6 and "died from SIGSEGV" in out and "failed" in out
    code, out, _ = ready("runs", "list")
    assert code == 0 and "crash" in out and "failed" in out


@pytest.mark.parametrize(("content", "message"), [
    ("steps: [fuse\n", "invalid YAML at line 2"),
    ("name: x\nstep: [fuse]\n", "step: Extra inputs are not permitted"),
    ("steps:\n  - quantize-static: {per_channel: maybe}\n",
     "per_channel: Input should be a valid boolean"),
    ("steps: [quantise]\n", "unknown transformer 'quantise'; known: "),
    ("- just a list\n", "a pipeline is a mapping"),
])
def test_bad_pipelines_name_the_problem(ready, tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, out, err = ready("run", path, "--model", "digits-cnn", "--dataset", "digits")
    assert code in (2, 3) and message in err, err
    assert len(err.strip().splitlines()) <= 2
    assert "Traceback" not in out + err


def test_bad_model_files_store_nothing(cli, settings, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model at all" * 100)
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"w": 1}))
    saved = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), saved)
    for path, message in ((corrupt, "is not a valid ONNX model"),
                          (pickled, "pickle"), (saved, "torch.save pickle")):
        code, _, err = cli("models", "add", path)
        assert code == 2 and message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert "safe" in err or ".pt2" in err
    assert blobs(settings) == []
    assert json.loads(cli("models", "list", "--json")[1]) == []


def test_bad_dataset_files_store_nothing(cli, settings, tmp_path: Path) -> None:
    traversal = write_zip(tmp_path / "evil.zip", {"a/1.png": png_bytes(1),
                                                   "../escape.png": png_bytes(2)})
    code, _, err = cli("datasets", "add", traversal)
    assert code == 2 and "escapes the archive" in err
    code, _, err = cli("datasets", "add", "no-such-file.npz")
    assert code == 2 and "neither a file nor a built-in" in err
    assert blobs(settings) == [] and not (tmp_path.parent / "escape.png").exists()


def test_a_name_taken_keeps_the_first_model(ready, cli, settings, tmp_path: Path) -> None:
    before = blobs(settings)
    other = linear_onnx(tmp_path / "other.onnx")
    code, _, err = cli("models", "add", other, "--name", "digits-cnn")
    assert code == 4 and "already exists" in err
    models = json.loads(cli("models", "list", "--json")[1])
    assert [m["kind"] for m in models] == ["torch-exported"]
    assert set(before) <= set(blobs(settings))


def test_onnx_model_with_external_data_is_stored_inline(cli, tmp_path: Path) -> None:
    import onnx
    from onnx import external_data_helper

    model = onnx.load(str(linear_onnx(tmp_path / "m.onnx")))
    folder = tmp_path / "ext"
    folder.mkdir()
    external_data_helper.convert_model_to_external_data(model, location="w.bin",
                                                        size_threshold=0)
    onnx.save(model, str(folder / "model.onnx"))
    code, out, err = cli("models", "add", folder / "model.onnx", "--name", "ext", "--json")
    assert code == 0, err
    shutil.rmtree(folder)  # the registered copy must not depend on the side file
    sha = json.loads(out)["artifact_sha"]
    from tinymlaas.config import get_settings

    stored = get_settings().resolved_artifacts_dir / sha[:2] / sha
    loaded = onnx.load(str(stored))
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in loaded.graph.initializer)


def test_version_and_help(cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("tinymlaas ")
    code, out, _ = cli("--help")
    assert code == 0 and "compare" in out and "export" in out
