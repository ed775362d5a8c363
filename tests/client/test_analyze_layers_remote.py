"""``tinymlaas --server URL analyze --layers``: the model comes from the server, the profile
is computed here, exactly as for a local file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import small_cnn_onnx
from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client
from tinymlaas.compiler.profile import profile_model


def test_layers_of_a_model_on_the_server(live: LiveServer, sdk: Client, cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tinymlaas.config import get_settings

    model = small_cnn_onnx(tmp_path / "cnn.onnx")
    monkeypatch.setenv("TINYMLAAS_SERVER", live.url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", sdk.create_token("cli").token)
    get_settings.cache_clear()
    try:
        assert cli("models", "add", model, "--name", "cnn")[0] == 0
        code, out, err = cli("analyze", "cnn", "--layers", "--json")
        assert code == 0, err
        body = json.loads(out)
        assert body["model"] == "cnn"
        assert body["layers"] == [r.model_dump() for r in profile_model(model)]
        assert sum(r["macs"] for r in body["layers"]) == body["macs"] == 8192
        code, out, err = cli("analyze", "cnn", "--layers")
        assert code == 0 and "conv2 (+1)" in out, err
    finally:
        get_settings.cache_clear()
