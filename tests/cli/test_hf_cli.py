"""``models add`` for Hugging Face models (a folder, a cache folder, ``hf:ORG/NAME`` from the
cache, offline) and ``datasets add --tokenizer`` for text; a run on the result evaluates."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from hf_folders import COMMIT, tiny_tokenizer, write_bert_folder, write_hub_cache
from tinymlaas.formats.datasets import read_canonical

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hub cache in a temporary HF_HOME, offline."""
    home = tmp_path / "hf-home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home / "hub"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_folder_and_cached_repo_register_and_tokenize_text(cli, bert_folder: Path,
                                                          offline: Path, tmp_path: Path,
                                                          services) -> None:
    code, out, err = cli("models", "add", bert_folder, "--json")
    assert code == 0, err
    model = json.loads(out)
    assert model["name"] == "tiny-bert" and model["kind"] == "onnx"
    assert model["task"] == "embedding" and "tokenizer and config kept" in model["description"]
    assert [(t["name"], t["dtype"], t["shape"]) for t in model["inputs"]] == \
        [(n, "int64", ["batch", "sequence"]) for n in INPUTS]
    assert [t["name"] for t in model["outputs"]] == ["last_hidden_state", "pooler_output"]

    # hf:ORG/NAME resolves from the (offline) cache; a cache folder works as a path too
    write_hub_cache(offline, "org/tiny-bert", bert_folder)
    code, out, err = cli("models", "add", "hf:org/tiny-bert", "--name", "hub-bert")
    assert code == 0, err
    assert "registered model hub-bert" in out and "task embedding" in out
    hub_model = services.get_model("hub-bert")
    assert hub_model.description.startswith(f"hf:org/tiny-bert@{COMMIT}: BertModel")
    assert hub_model.parameters == model["parameters"] > 0
    code, out, err = cli("models", "add", offline / "models--org--tiny-bert", "--revision",
                         "main", "--name", "cache-bert")
    assert code == 0, err

    # a labelled CSV and an unlabelled JSONL, tokenized with the model's own tokenizer
    csv_path = tmp_path / "reviews.csv"
    rows = [("a very good movie", "pos"), ("bad plot, awful acting", "neg"),
            ("the cat sat on the mat", "pos"), ("not great", "neg")] * 10
    csv_path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    code, out, err = cli("datasets", "add", csv_path, "--tokenizer", "tiny-bert",
                         "--label-column", "label", "--max-length", "16", "--json")
    assert code == 0, err
    dataset = json.loads(out)
    assert dataset["source_format"] == "text" and dataset["task"] == "classification"
    assert dataset["num_samples"] == 40 and dataset["class_names"] == ["neg", "pos"]
    X, y = read_canonical(services.artifact_path(dataset["artifact_sha"]))
    assert X.dtype.names == tuple(INPUTS)
    assert all(X.dtype[n].base == np.int64 and X.dtype[n].shape == (16,) for n in INPUTS)
    assert X["input_ids"][0].tolist() == tiny_tokenizer()(
        "a very good movie", padding="max_length", max_length=16)["input_ids"]
    assert y.tolist()[:4] == [1, 0, 1, 0]

    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in rows))
    code, out, err = cli("datasets", "add", jsonl, "--tokenizer", "hub-bert", "--padding",
                         "longest", "--max-length", "64")
    assert code == 0, err
    assert "40 samples of tokenized text, task embedding" in out

    # a run on the tiny BERT with the text dataset evaluates: fidelity to the original
    pipeline = tmp_path / "int8.yaml"
    pipeline.write_text("name: int8\nsteps:\n  - quantize-dynamic\n")
    code, out, err = cli("run", pipeline, "--model", "tiny-bert", "--dataset", "texts",
                         "--json")
    assert code in (0, 8), err  # succeeded, or degraded by the fidelity gate
    run = json.loads(out)
    assert run["status"] in ("succeeded", "degraded")
    result = run["result"]
    assert 0.5 < result["cosine_mean"] <= 1.0 + 1e-6, result
    assert result["cosine_min"] <= result["cosine_p5"] <= result["cosine_mean"]
    assert result["file_bytes"] < run["baseline"]["file_bytes"]  # int8 weights are smaller


def test_text_dataset_errors_exit_2(cli, tmp_path: Path) -> None:
    from encoder_models import write_encoder

    # an ONNX model registered from a file has no tokenizer
    assert cli("models", "add", write_encoder(tmp_path / "enc.onnx"), "--name", "enc")[0] == 0
    data = tmp_path / "t.csv"
    data.write_text("text\nhello\n")
    code, _, err = cli("datasets", "add", data, "--tokenizer", "enc")
    assert code == 2 and "the model has no tokenizer" in err
    code, _, err = cli("datasets", "add", data, "--tokenizer", "no-such-model")
    assert code == 3 and "not found" in err
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "hi"}\n')
    code, _, err = cli("datasets", "add", jsonl)
    assert code == 2 and "--tokenizer MODEL" in err
    code, _, err = cli("datasets", "add", data, "--tokenizer", "enc", "--max-length", "1")
    assert code == 2 and "max_length must be 2 to 8192" in err
    assert len(err.strip().splitlines()) == 1


def test_unreachable_hub_exits_7_in_one_line(cli, offline: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = cli("models", "add", "hf:org/not-cached")
    assert code == 7 and out == ""
    assert "cannot be reached" in err and "HF_HUB_OFFLINE=1" in err and "not found" not in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    code, _, err = cli("models", "add", "hf:org/not-cached", "--revision", "main")
    assert code == 7 and "cannot be reached (http://127.0.0.1:" in err
    code, _, err = cli("models", "add", "hf:../etc")
    assert code == 2 and "not a Hugging Face repo id" in err


def test_pickle_only_folder_exits_2(cli, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    code, _, err = cli("models", "add", folder)
    assert code == 2 and "refused because loading them runs code" in err


def test_models_add_prints_no_library_noise(bert_folder: Path, tmp_path: Path) -> None:
    """What a new user sees on the terminal: the result, not torchao's GPU kernels that do
    not load, torch's pytree notes or the exporter's skipped torchvision ops."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", "models", "add",
                           str(bert_folder)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home")},
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "registered model tiny-bert" in proc.stdout
    for noise in ("Failed to load", "_pytree", "Skipping torchvision"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
