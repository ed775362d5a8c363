"""The run page sends its test split to a device running a release of the run (no
browser: the form's POST, its refusals, and a second user)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from web_support import csrf_of, sign_in, text_of

from tinymlaas.api.testing import write_digits_onnx


def test_the_run_page_runs_its_test_split_on_a_device(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "runner@example.com")
    model = api.upload_model(write_digits_onnx(tmp_path / "m.onnx"), name="m")
    data = api.add_builtin_dataset("digits")
    run = api.follow(api.create_run(model.id, data.id, pipeline={
        "steps": ["package-python"], "evaluate": False}).id)
    assert run.status == "succeeded", run.error
    assert 'id="run-on-device"' not in http.get(f"/runs/{run.id}").text, "no device yet"

    code = api.enroll_device("bench-1", groups=["lab"]).enrollment_code
    identity = http.post("/ddi/enroll", json={"code": code}).json()
    headers = {"Authorization": f"TargetToken {identity['token']}"}
    base = f"/ddi/{identity['tenant']}/controller/v1/{identity['controller_id']}"
    api.deploy("lab", run=run.id)
    action = http.get(base, headers=headers).json()["_links"]["deploymentBase"]["href"]
    done = http.post(f"{action}/feedback", headers=headers, json={"status": {
        "execution": "closed", "result": {"finished": "success"},
        "tinymlaas": {"stage": "committed"}}})
    assert done.status_code == 200

    page = http.get(f"/runs/{run.id}")
    assert 'id="run-on-device"' in page.text and "bench-1 (v1)" in page.text
    token = csrf_of(http, f"/runs/{run.id}")
    sent = http.post(f"/runs/{run.id}/device-inference", data={
        "csrf_token": token, "device": identity["controller_id"], "limit": "5"},
        follow_redirects=False)
    assert sent.status_code == 303
    assert sent.headers["location"].startswith(f"/fleet/devices/{identity['controller_id']}")
    [job] = api.fleet_device("bench-1").inference
    assert job.samples == 5 and job.dataset_id == data.id
    assert "inference" in http.get(base, headers=headers).json()["_links"]

    bad = http.post(f"/runs/{run.id}/device-inference", data={
        "csrf_token": token, "device": identity["controller_id"], "limit": "many"})
    assert bad.status_code == 400 and "whole number" in text_of(bad.text)
    assert http.post(f"/runs/{run.id}/device-inference", data={
        "csrf_token": "forged", "device": identity["controller_id"]}).status_code == 403
    with TestClient(http.app, raise_server_exceptions=False) as other:
        sign_in(other, "stranger@example.com")
        stolen = other.post(f"/runs/{run.id}/device-inference", data={
            "csrf_token": csrf_of(other, "/fleet"), "device": identity["controller_id"]})
        assert stolen.status_code == 404
    assert len(api.fleet_device("bench-1").inference) == 1
