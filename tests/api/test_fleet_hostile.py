"""The fleet against hostile users and devices: a viewer of a shared project changes
nothing, another user's jobs and datasets are out of reach, a re-enrolled device's old
credential and code are dead, DDI file names cannot leave a release, a device reporting in a
loop cannot grow its history without bound nor reopen what has ended, and a package cannot
take the name of a release's own documents."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_fleet_api import PACKAGE, Device

from tinymlaas.client import Client
from tinymlaas.errors import ForbiddenError, NotFoundError
from tinymlaas.store.fleet import MAX_EVENTS


@pytest.fixture
def released(alice: Client, alice_model, alice_data) -> str:
    run = alice.create_run(alice_model.id, alice_data.id, pipeline=PACKAGE)
    assert alice.follow(run.id).status == "succeeded"
    return run.id


def _installed(http: TestClient, alice: Client, run: str, name: str) -> tuple[Device, str]:
    device = Device(http, alice.enroll_device(name, groups=["lab"]).enrollment_code)
    rollout = alice.deploy("lab", run=run)
    device.report(device.action(), "committed")
    return device, rollout.id


def test_a_viewer_of_a_shared_project_sees_the_fleet_but_changes_nothing(
        http, alice, bob, released, alice_data) -> None:
    device, rollout = _installed(http, alice, released, "v1")
    project = alice.fleet_device("v1").project
    alice.share_project(project, "bob@example.com", role="viewer")
    assert bob.fleet_device("v1").id == device.identity["controller_id"]
    assert bob.rollout(rollout).id == rollout
    changes = [lambda: bob.revoke_device("v1"), lambda: bob.renew_enrollment("v1"),
               lambda: bob.enroll_device("v2", project=project),
               lambda: bob.create_release(released),
               lambda: bob.deploy("lab", run=released),
               lambda: bob.rollout_action(rollout, "pause"),
               lambda: bob.rollout_action(rollout, "cancel"),
               lambda: bob.rollout_action(rollout, "rollback"),
               lambda: bob.request_inference("v1", alice_data.id, limit=4)]
    for change in changes:
        with pytest.raises(ForbiddenError):
            change()
    # nothing moved: the device still works, one release, the rollout finished
    assert device.action() is None
    assert len(alice.list_releases()) == 1
    assert alice.rollout(rollout).state.value == "finished"
    assert alice.fleet_device("v1").inference == []


def test_another_user_reaches_no_job_release_or_run_and_uses_no_dataset_of_alice(
        http, alice, bob, released, alice_data) -> None:
    _, rollout = _installed(http, alice, released, "p1")
    job = alice.request_inference("p1", alice_data.id, limit=4)
    release = alice.rollout(rollout).release_id
    for call in (lambda: bob.inference_job(job.id), lambda: bob.create_release(released),
                 lambda: bob.deploy("lab", release=release),
                 lambda: bob.request_inference(alice.fleet_device("p1").id, alice_data.id)):
        with pytest.raises(NotFoundError):
            call()
    # bob's own device asked to run alice's dataset: the dataset is not found for him
    bob.enroll_device("b1", groups=["lab"])
    answer = http.post("/api/v1/fleet/devices/b1/inference",
                       headers={"Authorization": f"Bearer {bob.token}"},
                       json={"dataset": alice_data.id, "limit": 4})
    assert answer.status_code == 404 and "dataset" in answer.json()["message"], answer.text
    # a limit past the cap is refused before anything is queued
    huge = http.post("/api/v1/fleet/devices/p1/inference",
                     headers={"Authorization": f"Bearer {alice.token}"},
                     json={"dataset": alice_data.id, "limit": 10**9})
    assert huge.status_code == 422
    assert [j.id for j in alice.fleet_device("p1").inference] == [job.id]


def test_a_re_enrolled_device_loses_its_old_credential_and_code(http, alice) -> None:
    first = alice.enroll_device("r1", groups=["lab"]).enrollment_code
    device = Device(http, first)
    assert http.post("/ddi/enroll", json={"code": first}).status_code == 401, "used once"
    renewed = alice.renew_enrollment("r1").enrollment_code
    assert http.get(device.base, headers=device.headers).status_code == 401
    again = Device(http, renewed)
    assert again.identity["controller_id"] == device.identity["controller_id"]
    assert http.get(again.base, headers=again.headers).status_code == 200
    assert http.get(device.base, headers=device.headers).status_code == 401
    # a valid credential on its own device id under another tenant: not found
    other = again.base.replace(f"/ddi/{again.identity['tenant']}/", "/ddi/prj_other/")
    assert http.get(other, headers=again.headers).status_code == 404
    # revoked, then renewed: the code of before the revocation is dead too
    stale = alice.renew_enrollment("r1").enrollment_code
    alice.revoke_device("r1")
    assert http.post("/ddi/enroll", json={"code": stale}).status_code == 401


def test_ddi_file_names_cannot_leave_the_release(http, alice, released) -> None:
    device = Device(http, alice.enroll_device("t1", groups=["lab"]).enrollment_code)
    rollout = alice.deploy("lab", run=released)
    base = f"{device.base}/softwaremodules/{rollout.release_id}/artifacts"
    assert http.get(f"{base}/golden.npz", headers=device.headers).status_code == 200
    for name in ("..%2f..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd", "..%2fmanifest.json",
                 "golden.npz%2f..%2f..%2fticket.json", "..", "."):
        answer = http.get(f"{base}/{name}", headers=device.headers)
        assert answer.status_code == 404, (name, answer.status_code)
        assert b"root:" not in answer.content


def test_feedback_in_a_loop_keeps_a_bounded_history_and_cannot_reopen_an_action(
        http, alice, studio, released) -> None:
    device, rollout = _installed(http, alice, released, "f1")
    action = alice.rollout(rollout).actions[0].id
    body = {"status": {"execution": "proceeding", "result": {"finished": "none"},
                       "details": ["x" * 4000], "tinymlaas": {"stage": "downloading"}}}
    url = f"{device.base}/deploymentBase/{action}/feedback"
    for _ in range(MAX_EVENTS + 40):
        answer = http.post(url, headers=device.headers, json=body)
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
    history = studio.fleet.store.history(device.identity["controller_id"], limit=10**6)
    assert len(history) == MAX_EVENTS
    assert all(len(e.message) <= 2000 for e in history)
    # a late "failed" for the ended action is history only: the rollout stays finished
    late = {"status": {"execution": "closed", "result": {"finished": "failure"},
                       "tinymlaas": {"stage": "failed"}}}
    assert http.post(url, headers=device.headers, json=late).json()["state"] == "succeeded"
    assert alice.rollout(rollout).counts == {"succeeded": 1}
    # too many details, too long a detail, or a version no database column holds:
    # refused by the schema (not a server error)
    for status in ({"details": ["x"] * 51}, {"details": ["x" * 4001]},
                   {"tinymlaas": {"stage": "downloading", "version": 10**30}},
                   {"tinymlaas": {"stage": "downloading", "version": 2**40}}):
        too_big = {"status": {**body["status"], **status}}
        assert http.post(url, headers=device.headers, json=too_big).status_code == 422


def test_a_finished_inference_job_is_not_reopened_by_its_device(
        http, alice, released, alice_data) -> None:
    device, _ = _installed(http, alice, released, "i1")
    job = alice.request_inference("i1", alice_data.id, limit=2)
    link = device.poll()["inference"]["href"]
    buffer = io.BytesIO()
    np.savez(buffer, **{"output/0": np.zeros((2, 10), np.float32)})
    outputs = base64.b64encode(buffer.getvalue()).decode()
    assert http.post(f"{link}/result", headers=device.headers,
                     json={"latency_ms": [1.0, 1.0], "outputs": outputs}).status_code == 200
    assert http.get(link, headers=device.headers).status_code == 200
    assert alice.inference_job(job.id).state == "done"
    assert http.post(f"{link}/result", headers=device.headers,
                     json={"latency_ms": [9.0, 9.0], "outputs": outputs}).status_code == 409
    assert alice.inference_job(job.id).metrics["latency_ms_p50"] == pytest.approx(1.0)
    assert "inference" not in device.poll()


def test_inference_outputs_that_unpack_past_the_cap_are_refused(
        http, alice, released, alice_data) -> None:
    device, _ = _installed(http, alice, released, "z1")
    job = alice.request_inference("z1", alice_data.id, limit=2)
    link = device.poll()["inference"]["href"]
    bomb = io.BytesIO()  # 80 MiB of zeros in a few hundred KiB
    np.savez_compressed(bomb, **{"output/0": np.zeros((2, 10 * 1024**2), np.float32)})
    assert len(bomb.getvalue()) < 1024**2
    answer = http.post(f"{link}/result", headers=device.headers, json={
        "latency_ms": [1.0, 1.0], "outputs": base64.b64encode(bomb.getvalue()).decode()})
    assert answer.status_code == 413 and "unpack" in answer.json()["message"], answer.text
    assert alice.inference_job(job.id).state == "queued", "nothing was stored"
    not_a_zip = base64.b64encode(b"PK\x03\x04 not really a zip").decode()
    assert http.post(f"{link}/result", headers=device.headers, json={
        "latency_ms": [1.0, 1.0], "outputs": not_a_zip}).status_code == 400


def test_a_package_cannot_take_the_name_of_a_release_document(studio, tmp_path) -> None:
    blob = tmp_path / "manifest.json"
    blob.write_bytes(b"not the manifest")
    sha, _ = studio.services.artifacts.put_file(blob)
    names = {given: studio.fleet._file(given, sha, "c-bundle").name
             for given in ("manifest.json", "ticket.json", "golden.npz", "../../etc/passwd",
                           "/abs/path.zip", "..", "x" * 300 + ".zip")}
    assert names["manifest.json"] == "package-manifest.json"
    assert names["ticket.json"] == "package-ticket.json"
    assert names["golden.npz"] == "package-golden.npz"
    assert names["../../etc/passwd"] == "etc_passwd"
    assert names["/abs/path.zip"] == "abs_path.zip"
    assert names[".."] == "package.bin"
    assert all("/" not in n and len(n) <= 128 for n in names.values())
    assert studio.fleet._file("golden.npz", sha, "golden-npz").name == "golden.npz"
