"""The SDK and the remote CLI send an ONNX model's external-data files along with it, over
a real HTTP connection, and refuse locally what the server would refuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from tinymlaas import errors
from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client


def _save_external(source: Path, folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "digits.onnx"
    onnx.save_model(onnx.load(str(source)), str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return target


def _logits(model: Path) -> np.ndarray:
    x = (load_digits().images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.fixture
def remote(live: LiveServer, sdk: Client, monkeypatch: pytest.MonkeyPatch, cli):
    monkeypatch.setenv("TINYMLAAS_SERVER", live.url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", sdk.create_token("cli").token)
    from tinymlaas.config import get_settings

    get_settings.cache_clear()
    yield cli
    get_settings.cache_clear()


def test_sdk_and_remote_cli_send_external_data(remote, sdk: Client, tiny_onnx: Path,
                                               tmp_path: Path) -> None:
    external = _save_external(tiny_onnx, tmp_path / "sdk", "weights.bin")
    model = sdk.upload_model(external, name="sdk-ext")
    assert model.parameters == 64 * 10 + 10
    downloaded = sdk.download_model(model.id, tmp_path / "down.onnx")
    assert onnx.load(str(downloaded), load_external_data=False).graph.initializer[0] \
        .data_location == onnx.TensorProto.DEFAULT  # one self-contained file
    reference = _logits(tiny_onnx)
    np.testing.assert_allclose(_logits(downloaded), reference, rtol=1e-6, atol=1e-6)
    assert (reference.argmax(1) == load_digits().target).mean() > 0.95

    cli_model = _save_external(tiny_onnx, tmp_path / "cli", "digits.onnx.data")
    code, out, err = remote("models", "add", cli_model, "--name", "cli-ext", "--json")
    assert code == 0, err
    assert json.loads(out)["artifact_sha"] == model.artifact_sha  # the same weights

    # Refused before anything is sent: a missing file, a location in a subfolder.
    (tmp_path / "cli" / "digits.onnx.data").unlink()
    code, _, err = remote("models", "add", cli_model, "--name", "gone")
    assert code == 2 and "'digits.onnx.data'" in err and "missing" in err
    (tmp_path / "nested" / "weights").mkdir(parents=True)
    nested = _save_external(tiny_onnx, tmp_path / "nested", "weights/w.bin")
    with pytest.raises(errors.InvalidInputError, match="subfolder"):
        sdk.upload_model(nested)
    assert sorted(m.name for m in sdk.list_models()) == ["cli-ext", "sdk-ext"]
