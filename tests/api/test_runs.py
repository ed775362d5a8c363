"""Runs through the API: templates, live events, logs, metrics, comparison, downloads,
cancel and resubmit, registered external transformers."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from api_support import API, FAST, assert_error_shape, sleep_once, wait_for
from fastapi.testclient import TestClient

from helpers import step_python
from tinymlaas.client import Client

COPY = [step_python(), "-c",
        "import json, shutil, sys; shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2]); "
        "cfg = json.load(open(sys.argv[3])); "
        "json.dump(dict(scale=cfg['scale']), open(sys.argv[2] + '/metrics.json', 'w'))",
        "{in}", "{out}", "{params}"]


def test_builtin_template_checks_the_chain(http: TestClient, alice: Client, alice_model,
                                           alice_data) -> None:
    # The shipped templates start with export-onnx (for PyTorch models): an ONNX model is
    # refused before anything runs, with the reason.
    response = http.post(f"{API}/runs", headers={"Authorization": f"Bearer {alice.token}"},
                         json={"model": alice_model.name, "dataset": alice_data.name,
                               "template": "dynamic-int8"})
    assert response.status_code == 422
    assert_error_shape(response.json(), "incompatible_chain")
    assert "export-onnx" in response.json()["message"]
    assert alice.list_runs() == []


def test_inline_pipeline_events_metrics_and_downloads(http: TestClient, alice: Client,
                                                      alice_model, alice_data,
                                                      tmp_path: Path) -> None:
    pipeline = {"steps": ["fuse", {"quantize-dynamic": {"per_channel": False}}]}
    run = alice.create_run(alice_model.id, alice_data.id, pipeline=pipeline, name="int8")
    assert [s.transformer for s in run.steps] == ["fuse", "quantize-dynamic"]
    events = list(alice.events(run.id))
    names = [name for name, _ in events]
    assert names[0] == "run" and names[-2:] == ["run", "end"]
    progress = [payload for name, payload in events if name == "progress"]
    stages = {(p.stage, p.status) for p in progress}
    assert {(0, "succeeded"), (1, "succeeded"), ("evaluate", "succeeded")} <= stages
    final = events[-2][1]
    assert final.status == "succeeded", final.error
    assert [s.status for s in final.steps] == ["succeeded", "succeeded"]

    # A client arriving after the end still gets the state, then the end.
    late = list(alice.events(run.id))
    assert [name for name, _ in late] == ["run", "run", "end"]
    assert late[0][1].status == "succeeded"

    metrics = alice.run_metrics(run.id)
    assert metrics.result["accuracy"] > 0.85
    assert metrics.result["file_bytes"] < metrics.baseline["file_bytes"]
    assert [s["transformer"] for s in metrics.steps] == ["fuse", "quantize-dynamic"]
    logs = alice.run_logs(run.id)
    assert len(logs) == 2 and all(isinstance(entry.log, str) for entry in logs)
    assert alice.step_log(run.id, 1) == logs[1].log

    artifacts = alice.run_artifacts(run.id)
    assert artifacts[0].sha256 == alice_model.artifact_sha
    assert artifacts[-1].sha256 == final.output_sha
    output = alice.download_output(run.id, tmp_path)
    assert output.name == "int8-model.onnx"
    assert hashlib.sha256(output.read_bytes()).hexdigest() == final.output_sha
    auth = {"Authorization": f"Bearer {alice.token}"}
    by_prefix = http.get(f"{API}/runs/{run.id}/artifacts/{artifacts[1].sha256[:12]}",
                         headers=auth)
    assert by_prefix.status_code == 200
    assert by_prefix.headers["content-type"] == "application/onnx"
    assert hashlib.sha256(by_prefix.content).hexdigest() == artifacts[1].sha256
    foreign = http.get(f"{API}/runs/{run.id}/artifacts/{'0' * 64}", headers=auth)
    assert foreign.status_code == 404

    export = http.get(f"{API}/runs/{run.id}/export", headers=auth)
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(export.content)) as zf:
        assert set(zf.namelist()) == {"model.onnx", "metrics.json", "pipeline.yaml",
                                      "lineage.json"}
        assert json.loads(zf.read("metrics.json"))["run"] == run.id

    baseline = alice.create_run(alice_model.id, alice_data.id, pipeline={"steps": ["fuse"]},
                                name="fused")
    assert alice.follow(baseline.id).status == "succeeded"
    rows = alice.compare([run.id, "fused"], reference="fused")
    assert [r.name for r in rows] == ["int8", "fused"]
    assert rows[0].size_ratio is not None and rows[0].size_ratio > 1.2  # tiny model: overhead
    assert rows[1].size_ratio == 1.0
    assert [r.id for r in alice.list_runs(status="succeeded")] == [baseline.id, run.id]


def test_compare_warns_when_runs_start_from_different_models(
        http: TestClient, alice: Client, alice_model, alice_data, tiny_onnx: Path,
        tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_onnx))
    bias = model.graph.initializer[1]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 1.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "other.onnx"))
    other = alice.upload_model(tmp_path / "other.onnx", name="other")
    assert other.artifact_sha != alice_model.artifact_sha
    runs = [alice.create_run(model_id, alice_data.id, pipeline=FAST, name=name).id
            for model_id, name in ((alice_model.id, "a"), (alice_model.id, "b"),
                                   (other.id, "c"))]

    same = alice.compare(runs[:2])
    assert [r.warnings for r in same] == [[], []]
    assert [r.source_model for r in same] == [alice_model.id] * 2
    assert [r.source_model_sha for r in same] == [alice_model.artifact_sha] * 2

    mixed = alice.compare([runs[0], runs[2]])
    assert [r.source_model for r in mixed] == [alice_model.id, other.id]
    assert mixed[0].warnings == mixed[1].warnings and len(mixed[0].warnings) == 1
    assert "different models" in mixed[0].warnings[0]
    assert f"other ({other.id})" in mixed[0].warnings[0]
    # the response is still a list of rows; each row carries the new fields
    raw = http.post(f"{API}/runs/compare", json={"runs": [runs[0], runs[2]]},
                    headers={"Authorization": f"Bearer {alice.token}"})
    assert raw.status_code == 200 and isinstance(raw.json(), list)
    assert raw.json()[1]["source_model"] == other.id
    assert raw.json()[0]["warnings"] == mixed[0].warnings
    for run in runs:
        alice.follow(run)


def test_invalid_pipelines_are_4xx(http: TestClient, alice: Client, alice_model,
                                   alice_data) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    cases = [
        ({"steps": ["no-such-step"]}, 404),
        ({"steps": [{"quantize-dynamic": {"bogus": 1}}]}, 400),
        ({"steps": ["export-onnx"]}, 422),  # an ONNX model cannot be exported again
        ({"steps": "fuse"}, 400),
    ]
    for pipeline, code in cases:
        response = http.post(f"{API}/runs", headers=auth, json={
            "model": alice_model.id, "dataset": alice_data.id, "pipeline": pipeline})
        assert response.status_code == code, (pipeline, response.json())
        assert_error_shape(response.json())
    both = http.post(f"{API}/runs", headers=auth, json={
        "model": alice_model.id, "dataset": alice_data.id, "pipeline": FAST,
        "template": "fuse"})
    assert both.status_code == 422
    assert alice.list_runs() == []


def test_cancel_then_resubmit(http: TestClient, alice: Client, alice_model, alice_data,
                              shared_dir: Path) -> None:
    marker = shared_dir / "slept"
    alice.register_transformer("sleepy", command=sleep_once(marker, 120))
    run = alice.create_run(alice_model.id, alice_data.id,
                           pipeline={"steps": ["sleepy"], "evaluate": False})
    cancelled = False
    for name, payload in alice.events(run.id):
        if name in {"run", "progress"} and payload.status == "running" and not cancelled:
            wait_for(marker.exists)  # the command is sleeping now
            assert alice.cancel_run(run.id).id == run.id
            cancelled = True
    final = alice.get_run(run.id)
    assert final.status == "cancelled"
    assert final.steps[0].status == "cancelled"
    auth = {"Authorization": f"Bearer {alice.token}"}
    again = http.post(f"{API}/runs/{run.id}/cancel", headers=auth)
    assert again.status_code == 409
    assert_error_shape(again.json(), "conflict")

    resubmitted = alice.submit_run(run.id)
    assert resubmitted.id == run.id
    final = alice.follow(run.id)
    assert final.status == "succeeded", final.error
    assert final.output_sha == alice_model.artifact_sha
    done = http.post(f"{API}/runs/{run.id}/submit", headers=auth)
    assert done.status_code == 409


def test_external_transformers_and_templates(http: TestClient, alice: Client, alice_model,
                                             alice_data) -> None:
    registered = alice.register_transformer("copy-model", command=COPY,
                                            config={"scale": 1}, summary="copies")
    assert registered.external and registered.project == alice.me().default_project
    names = {t.name for t in alice.list_transformers()}
    assert {"fuse", "quantize-static", "external", "copy-model"} <= names
    schema = alice.get_transformer("quantize-static").params_schema
    assert "per_channel" in schema["properties"]
    auth = {"Authorization": f"Bearer {alice.token}"}
    duplicate = http.post(f"{API}/transformers", headers=auth,
                          json={"name": "fuse", "command": ["true"]})
    assert duplicate.status_code == 409

    template = alice.create_template("copy-twice", {
        "steps": [{"copy-model": {"scale": 2}}, "copy-model"], "evaluate": False},
        description="two copies")
    assert template.pipeline["steps"][0] == {"transformer": "copy-model",
                                             "params": {"scale": 2}}
    assert {"static-int8", "copy-twice"} <= {t.name for t in alice.list_templates()}
    assert alice.get_template("static-int8").builtin
    bad = http.post(f"{API}/templates", headers=auth,
                    json={"name": "broken", "pipeline": {"steps": [{"fuse": {"x": 1}}]}})
    assert bad.status_code == 400

    run = alice.follow(alice.create_run(alice_model.id, alice_data.id,
                                        template="copy-twice").id)
    assert run.status == "succeeded", run.error
    assert [s.metrics["scale"] for s in run.steps] == [2, 1]  # params.json reached them
    assert run.output_sha == alice_model.artifact_sha  # a copy has the same content


def test_a_run_without_a_dataset_is_accepted_only_when_it_needs_none(
        http: TestClient, alice: Client, alice_model) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    evaluating = http.post(f"{API}/runs", headers=auth, json={
        "model": alice_model.id, "pipeline": {"steps": ["fuse"]}})
    assert evaluating.status_code == 400
    assert "evaluate: false" in evaluating.json()["message"]
    created = http.post(f"{API}/runs", headers=auth, json={
        "model": alice_model.id, "pipeline": {"steps": ["fuse"], "evaluate": False}})
    assert created.status_code == 201, created.json()
    assert created.json()["dataset_id"] is None
    assert [r.id for r in alice.list_runs()] == [created.json()["id"]]


def test_a_step_that_cannot_work_for_the_device_is_422(http: TestClient, alice: Client,
                                                       alice_model) -> None:
    response = http.post(f"{API}/runs", headers={"Authorization": f"Bearer {alice.token}"},
                         json={"model": alice_model.id, "device": "raspberry-pi-4",
                               "pipeline": {"steps": ["package-c", "sign-image"],
                                            "evaluate": False}})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"].startswith("step 2 (sign-image) cannot run for raspberry-pi-4")
    assert body["details"] == {"step": 2, "transformer": "sign-image",
                               "device": "raspberry-pi-4"}
    assert alice.list_runs() == []
