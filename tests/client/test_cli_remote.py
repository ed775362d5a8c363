"""The CLI with ``--server``: the same commands as locally, executed by the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client


@pytest.fixture
def remote(live: LiveServer, sdk: Client, monkeypatch: pytest.MonkeyPatch, cli):
    """The ``cli`` fixture pointed at the server with an API token (from the env)."""
    monkeypatch.setenv("TINYMLAAS_SERVER", live.url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", sdk.create_token("cli").token)
    from tinymlaas.config import get_settings

    get_settings.cache_clear()
    yield cli
    get_settings.cache_clear()


def test_cli_against_a_server(remote, live: LiveServer, sdk: Client, tiny_onnx: Path,
                              tmp_path: Path, settings) -> None:
    code, out, err = remote("models", "add", tiny_onnx, "--name", "logreg", "--json")
    assert code == 0, err
    model = json.loads(out)
    assert model["project"] == sdk.me().default_project
    assert remote("datasets", "add", "digits")[0] == 0
    pipeline = tmp_path / "fuse.yaml"
    pipeline.write_text("name: fused\nmodel: logreg\ndataset: digits\nsteps:\n  - fuse\n")
    code, out, err = remote("run", pipeline, "--json")
    assert code == 0, err
    run = json.loads(out)
    assert run["status"] == "succeeded" and run["name"] == "fused"

    code, out, _ = remote("runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [run["id"]]
    code, out, _ = remote("runs", "show", run["id"], "--log")
    assert code == 0 and "fuse" in out
    code, out, _ = remote("compare", run["id"], "--json")
    row = json.loads(out)[0]
    assert row["run_id"] == run["id"]
    assert row["source_model"] == model["id"] and row["warnings"] == []
    code, out, _ = remote("export", run["id"], "--out", tmp_path / "exported")
    assert code == 0
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {
        "model.onnx", "metrics.json", "pipeline.yaml", "lineage.json"}
    # Nothing was written to the local data directory: the server did the work.
    assert not (settings.home / "tinymlaas.db").exists()
    # The same errors as locally: one readable line and the exit code of the error.
    code, _, err = remote("models", "show", "nope")
    assert code == 3 and "not found" in err

    # Via the command-line options instead of the environment.
    code, out, err = remote("--server", live.url, "--token", "tmls_wrong",
                            "models", "list")
    assert code == 5 and "token" in err
