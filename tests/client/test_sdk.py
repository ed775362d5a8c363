"""The typed SDK against a real server over HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tinymlaas import Client as ExportedClient
from tinymlaas.api.schemas import ModelPublic, RunEventPublic, RunPublic
from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client
from tinymlaas.errors import AuthenticationError, InvalidInputError, NotFoundError


def test_sdk_end_to_end(sdk: Client, live: LiveServer, tiny_onnx: Path,
                        tmp_path: Path) -> None:
    assert ExportedClient is Client
    assert sdk.health()["status"] == "ok"
    token = sdk.create_token("ci")
    ci = Client(live.url, token.token)
    model = ci.upload_model(tiny_onnx, name="logreg")
    assert isinstance(model, ModelPublic) and model.parameters == 650
    data = ci.add_builtin_dataset("digits", test_fraction=0.3)
    run = ci.create_run(model.name, data.name, pipeline={"steps": ["fuse"]}, name="fused")
    assert isinstance(run, RunPublic) and run.status == "pending"
    seen: list[RunEventPublic] = []
    final = ci.follow(run.id, on_event=seen.append)
    assert final.status == "succeeded", final.error
    assert {(e.stage, e.status) for e in seen} >= {(0, "succeeded"),
                                                   ("evaluate", "succeeded")}
    assert final.result["accuracy"] == pytest.approx(final.baseline["accuracy"], abs=1e-9)
    out = ci.download_output(run.id, tmp_path / "fused.onnx")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == final.output_sha
    exported = ci.export_run(run.id, tmp_path)
    assert exported.name == f"fused-{run.id}.zip" and exported.stat().st_size > 0
    assert ci.get_model(model.id).artifact_sha == hashlib.sha256(
        tiny_onnx.read_bytes()).hexdigest()
    ci.close()


def test_sdk_errors_are_typed(sdk: Client, live: LiveServer, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as missing:
        sdk.get_run("run-doesnotexist")
    assert missing.value.details["http_status"] == 404
    with pytest.raises(InvalidInputError):
        sdk.create_run("m", "d", pipeline={"steps": []}, template="fuse")
    with pytest.raises(AuthenticationError):
        Client(live.url, "tmls_wrong").me()
    bogus = tmp_path / "weights.pkl"
    bogus.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InvalidInputError) as unsafe:
        sdk.upload_model(bogus)
    assert unsafe.value.details["http_status"] == 400
