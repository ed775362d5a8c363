"""A run's per-layer profile over the API (``GET /runs/{ref}/layers``, paged), the SDK's
``run_layers`` and ``tinymlaas --server URL runs layers``: the rows the compiler gives for the
model the run compiled, invisible to another user, and a clear refusal for a run without
a compiled model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from helpers import need_service as require_tool
from helpers import small_cnn_onnx
from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client
from tinymlaas.compiler.cortex_m import toolchain_missing
from tinymlaas.compiler.profile import add_instructions, profile_model
from tinymlaas.errors import ConflictError, NotFoundError

PASSWORD = "correct horse battery"


def _finished(sdk: Client, run_id: str) -> str:
    deadline = time.monotonic() + 300
    while (status := sdk.get_run(run_id).status) not in {"succeeded", "failed", "cancelled"}:
        assert time.monotonic() < deadline, f"run {run_id} did not finish"
        time.sleep(0.3)
    return status


def test_run_layers_over_the_api_the_sdk_and_the_remote_cli(
        live: LiveServer, sdk: Client, cli, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tinymlaas.config import get_settings

    path = small_cnn_onnx(tmp_path / "cnn.onnx")
    model = sdk.upload_model(path, name="cnn")
    dataset = sdk.add_builtin_dataset("digits")
    compiled = sdk.create_run(model.id, dataset.id, pipeline={
        "name": "to-c", "evaluate": False,
        "steps": [{"transformer": "compile-c", "params": {"io": "caller",
                                                          "verify_samples": 0}}]})
    packaged = sdk.create_run(model.id, dataset.id, pipeline={
        "name": "to-zip", "evaluate": False, "steps": ["package-python"]})
    assert _finished(sdk, compiled.id) == "succeeded"
    _finished(sdk, packaged.id)

    # The SDK follows the pages: the compiler's rows for the model with the step's options.
    expected = [r.model_dump() for r in profile_model(path, io="caller")]
    assert [r.model_dump() for r in sdk.run_layers(compiled.id)] == expected
    assert [r["macs"] for r in expected] == [2304, 0, 4608, 1280]

    # Paged like every list: two rows, then the rest through the Link header.
    headers = {"Authorization": f"Bearer {sdk.create_token('pages').token}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=60) as http:
        first = http.get(f"/api/v1/runs/{compiled.id}/layers", params={"limit": 2})
        assert first.status_code == 200, first.text
        assert [r["step"] for r in first.json()] == [0, 1]
        following = first.headers["Link"].split(";")[0].strip("<>")
        rest = http.get(following)
        assert [r["step"] for r in rest.json()] == [2, 3] and "Link" not in rest.headers
        # A run without a compiled model: 409 with a JSON error, never a 500.
        refused = http.get(f"/api/v1/runs/{packaged.id}/layers")
        assert refused.status_code == 409
        assert "no per-layer profile" in refused.json()["message"]
        assert http.get("/api/v1/runs/no-such-run/layers").status_code == 404
    with pytest.raises(ConflictError):
        sdk.run_layers(packaged.id)

    # Another user's run does not exist for them.
    with Client(live.url) as other:
        other.register("mallory@example.com", PASSWORD, "Mallory")
        other.login("mallory@example.com", PASSWORD)
        with pytest.raises(NotFoundError):
            other.run_layers(compiled.id)

    # The CLI against the server: the same rows, as JSON and as the table.
    monkeypatch.setenv("TINYMLAAS_SERVER", live.url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", sdk.create_token("cli").token)
    get_settings.cache_clear()
    try:
        code, out, err = cli("runs", "layers", compiled.id, "--json")
        assert code == 0, err
        assert json.loads(out) == expected
        code, out, err = cli("runs", "layers", compiled.id)
        assert code == 0, err
        for text in ("Conv+Relu", "conv1 (+1)", "pool1", "1x4x8x8", "4,608"):
            assert text in out, text
        code, out, err = cli("runs", "layers", packaged.id)
        assert code == ConflictError.exit_code and "no per-layer profile" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        code, _, err = cli("runs", "layers", "no-such-run")
        assert code == NotFoundError.exit_code and "not found" in err
        # analyze --layers --instructions of the server's model: counted here, as locally.
        require_tool(not toolchain_missing(), "the Arm toolchain and QEMU")
        code, out, err = cli("analyze", "cnn", "--layers", "--instructions", "--json")
        assert code == 0, err
        counted = add_instructions(profile_model(path), path, tmp_path / "count")
        assert json.loads(out)["layers"] == [r.model_dump() for r in counted]
        assert all(r.instructions for r in counted if r.op_type != "MaxPool")
    finally:
        get_settings.cache_clear()
