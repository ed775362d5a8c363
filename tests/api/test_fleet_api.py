"""The fleet through the API and the devices' DDI routes: waves that advance and pause,
rollback as a new version, inference on a device, and what a second user or another device
can reach (nothing)."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from tinymlaas.client import Client
from tinymlaas.contracts.ota import (
    DeploymentTicket,
    ReleaseManifest,
    load_public_key,
    verify_document,
)
from tinymlaas.domain import DatasetSplits
from tinymlaas.errors import InvalidInputError, NotFoundError
from tinymlaas.formats.datasets import split_indices

PACKAGE = {"steps": ["package-python"], "evaluate": False}


class Device:
    """A device speaking DDI over the test client."""

    def __init__(self, http: TestClient, code: str) -> None:
        answer = http.post("/ddi/enroll", json={"code": code})
        assert answer.status_code == 201, answer.text
        self.http, self.identity = http, answer.json()
        self.headers = {"Authorization": f"TargetToken {self.identity['token']}"}
        self.base = (f"/ddi/{self.identity['tenant']}/controller/v1/"
                     f"{self.identity['controller_id']}")

    def poll(self) -> dict:
        answer = self.http.get(self.base, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["_links"]

    def action(self) -> str | None:
        link = self.poll().get("deploymentBase")
        return link["href"].rsplit("/", 1)[1] if link else None

    def report(self, action: str, stage: str, *, finished: str = "success") -> dict:
        closed = stage in ("committed", "rolled_back", "refused", "failed")
        body = {"status": {"execution": "closed" if closed else "proceeding",
                           "result": {"finished": finished if closed else "none"},
                           "details": [f"{stage} here"], "tinymlaas": {"stage": stage}}}
        answer = self.http.post(f"{self.base}/deploymentBase/{action}/feedback",
                                headers=self.headers, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def released(alice: Client, alice_model, alice_data) -> str:
    run = alice.create_run(alice_model.id, alice_data.id, pipeline=PACKAGE)
    assert alice.follow(run.id).status == "succeeded"
    return run.id


def _devices(http: TestClient, owner: Client, names: list[str], group: str) -> list[Device]:
    return [Device(http, owner.enroll_device(n, groups=[group]).enrollment_code)
            for n in names]


def test_waves_advance_and_a_failing_wave_pauses_the_rollout(http, alice, released) -> None:
    devices = _devices(http, alice, ["d1", "d2", "d3", "d4"], "lab")
    rollout = alice.deploy("lab", run=released, waves=[50, 100], error_threshold=0.4)
    assert rollout.counts == {"offered": 2, "scheduled": 2}
    first, second = devices[:2], devices[2:]
    assert all(d.action() == d.action() and d.action() for d in first)
    assert all(d.action() is None for d in second), "wave 2 is not offered yet"

    # wave 1: one success, one rolled back (50 % > 40 %): the rollout pauses by itself
    first[0].report(first[0].action(), "downloading")
    assert alice.rollout(rollout.id).counts == {"offered": 1, "running": 1, "scheduled": 2}
    first[0].report(first[0].action(), "committed")
    first[1].report(first[1].action(), "rolled_back", finished="failure")
    paused = alice.rollout(rollout.id)
    assert paused.state.value == "paused" and "1 of 2 devices of wave 1 failed" in paused.message
    assert all(d.action() is None for d in second)

    # resuming goes on past the threshold; the second wave succeeds and the rollout ends
    resumed = alice.rollout_action(rollout.id, "resume")
    assert resumed.state.value == "running" and resumed.counts["offered"] == 2
    for device in second:
        device.report(device.action(), "committed")
    done = alice.rollout(rollout.id)
    assert done.state.value == "finished" and done.counts == {"succeeded": 3, "rolled_back": 1}
    assert "3 of 4 devices updated" in done.message
    versions = {d.name: d.version for d in alice.list_fleet(group="lab")}
    assert versions == {"d1": 1, "d2": None, "d3": 1, "d4": 1}


def test_release_documents_are_signed_for_one_device(http, alice, released) -> None:
    device = _devices(http, alice, ["gw"], "edge")[0]
    alice.deploy("edge", run=released)
    action = device.action()
    base = device.http.get(f"{device.base}/deploymentBase/{action}", headers=device.headers)
    assert base.status_code == 200
    files = {a["filename"]: a for a in base.json()["deployment"]["chunks"][0]["artifacts"]}
    assert set(files) == {"manifest.json", "ticket.json", "golden.npz",
                          next(n for n in files if n.endswith(".whl"))}
    key = load_public_key(device.identity["public_key"])
    got = {name: http.get(f["_links"]["download-http"]["href"], headers=device.headers)
           for name, f in files.items()}
    manifest = ReleaseManifest.model_validate(verify_document(got["manifest.json"].json(), key))
    ticket = DeploymentTicket.model_validate(verify_document(got["ticket.json"].json(), key))
    assert ticket.controller_id == device.identity["controller_id"]
    assert ticket.action_id == action and ticket.version == manifest.version == 1
    for name, answer in got.items():  # what the DDI listing says is what is served
        assert hashlib.sha256(answer.content).hexdigest() == files[name]["hashes"]["sha256"]
        assert len(answer.content) == files[name]["size"]
    wheel = files[manifest.package.name]["_links"]["download-http"]["href"]
    tail = http.get(wheel, headers={**device.headers, "Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == got[manifest.package.name].content[100:]
    with np.load(io.BytesIO(got["golden.npz"].content), allow_pickle=False) as golden:
        assert golden["input/input"].shape[1:] == (1, 8, 8)
        assert golden["output/0"].shape == (len(golden["input/input"]), 10)


def test_rollback_re_releases_the_previous_files_with_a_higher_version(
        http, alice, released) -> None:
    device = _devices(http, alice, ["r1"], "field")[0]
    first = alice.deploy("field", run=released)
    device.report(device.action(), "committed")
    second = alice.deploy("field", run=released, max_latency_ms=5.0)
    assert second.version == 2
    back = alice.rollout_action(second.id, "rollback")
    assert back.version == 3 and back.id != second.id
    assert alice.rollout(second.id).state.value == "cancelled"
    releases = {r.version: r for r in alice.list_releases()}
    assert releases[3].rollback_of == releases[1].id
    assert releases[3].package_sha == releases[1].package_sha
    assert device.action() == back.actions[0].id, "the device is offered the rollback"
    assert alice.rollout(first.id).counts == {"succeeded": 1}
    # the lists, a page at a time: newest first, the same items as one page
    auth = {"Authorization": f"Bearer {alice.token}"}
    for path, expected in (("releases", [3, 2, 1]), ("rollouts", [3, 2, 1])):
        whole = http.get(f"/api/v1/fleet/{path}?limit=100", headers=auth).json()
        assert [item["version"] for item in whole] == expected
        walked, url = [], f"/api/v1/fleet/{path}?limit=1"
        while url:
            answer = http.get(url, headers=auth)
            walked += answer.json()
            url = answer.headers.get("link", "").split(";")[0].strip()[1:-1]
        assert walked == whole


def test_inference_on_a_device_is_scored_against_the_dataset(
        http, alice, released, alice_data, tmp_path) -> None:
    device = _devices(http, alice, ["probe"], "lab")[0]
    alice.deploy("lab", run=released)
    device.report(device.action(), "committed")
    job = alice.request_inference("probe", alice_data.id, limit=8)
    assert job.state == "queued" and job.samples == 8
    link = device.poll()["inference"]["href"]
    work = http.get(link, headers=device.headers).json()
    inputs = http.get(work["inputs"]["_links"]["download-http"]["href"], headers=device.headers)
    with np.load(io.BytesIO(inputs.content), allow_pickle=False) as arrays:
        x = arrays["input/input"]
    assert x.shape == (8, 1, 8, 8)
    # the "device" answers class 0 for every sample: the accuracy is what that earns
    logits = np.zeros((8, 10), np.float32)
    logits[:, 0] = 1
    buffer = io.BytesIO()
    np.savez(buffer, **{"output/0": logits})
    bad = http.post(f"{link}/result", headers=device.headers,
                    json={"latency_ms": [1.0] * 8, "outputs": "bm90IGFuIG5weg=="})
    assert bad.status_code == 400
    answer = http.post(f"{link}/result", headers=device.headers, json={
        "latency_ms": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "outputs": base64.b64encode(buffer.getvalue()).decode()})
    assert answer.status_code == 200, answer.text
    done = alice.inference_job(job.id)
    # the test split's first 8 labels, by the split rule the server uses
    labels = load_digits().target[split_indices(1797, DatasetSplits())["test"][:8]]
    assert done.state == "done" and done.metrics["latency_ms_p50"] == pytest.approx(4.5)
    assert done.metrics["accuracy"] == pytest.approx(float(np.mean(labels == 0)))
    assert http.post(f"{link}/result", headers=device.headers, json={
        "latency_ms": [1.0] * 8, "outputs": base64.b64encode(buffer.getvalue()).decode()}
    ).status_code == 409, "a finished job takes no second answer"

    # the user's own samples, uploaded as an NPZ: shape checked, no pickles, then queued
    own = tmp_path / "samples.npz"
    np.savez(own, x=np.ones((3, 1, 8, 8), np.float32))
    mine = alice.request_inference("probe", samples=own, limit=2)
    assert mine.samples == 2 and mine.dataset_id is None and mine.state == "queued"
    for bad, words in ((np.ones((3, 8, 8), np.float32), "shaped (N, 1, 8, 8)"),
                       (np.array(["a", "b"]), "numbers")):
        np.savez(own, x=bad)
        with pytest.raises(InvalidInputError, match=re.escape(words)):
            alice.request_inference("probe", samples=own)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(InvalidInputError, match="NPZ"):
        alice.request_inference("probe", samples=pickled)
    (tmp_path / "not.npz").write_bytes(b"plain text")
    with pytest.raises(InvalidInputError, match="NPZ"):
        alice.request_inference("probe", samples=tmp_path / "not.npz")


def test_a_second_user_and_another_device_reach_nothing(http, alice, bob, released) -> None:
    mine = _devices(http, alice, ["a1"], "lab")[0]
    rollout = alice.deploy("lab", run=released)
    action = mine.action()
    theirs = _devices(http, bob, ["b1"], "lab")[0]
    for call in (lambda: bob.fleet_device("a1"), lambda: bob.rollout(rollout.id),
                 lambda: bob.rollout_action(rollout.id, "cancel"),
                 lambda: bob.deploy("lab", run=released)):
        with pytest.raises(NotFoundError):
            call()
    assert [d.name for d in bob.list_fleet()] == ["b1"]
    # bob's device, with its own valid credential, on alice's device's paths: 404
    assert http.get(mine.base, headers=theirs.headers).status_code == 404
    stolen = f"{theirs.base}/deploymentBase/{action}"
    assert http.get(stolen, headers=theirs.headers).status_code == 404
    release = rollout.release_id
    leak = f"{theirs.base}/softwaremodules/{release}/artifacts/manifest.json"
    assert http.get(leak, headers=theirs.headers).status_code == 404
    # no credential, a user's token, or a revoked device: 401
    assert http.get(mine.base).status_code == 401
    assert http.get(mine.base, headers={"Authorization": f"Bearer {alice.token}"}
                    ).status_code == 401
    alice.revoke_device("a1")
    assert http.get(mine.base, headers=mine.headers).status_code == 401
    assert alice.rollout(rollout.id).counts == {"cancelled": 1}


def test_bad_requests_are_refused_with_a_clear_4xx(http, alice, released) -> None:
    _devices(http, alice, ["x1"], "lab")
    for waves in ([100, 50], [10], [0, 100], [*range(1, 12), 100]):
        answer = http.post("/api/v1/fleet/rollouts", headers={
            "Authorization": f"Bearer {alice.token}"},
            json={"group": "lab", "run": released, "waves": waves})
        assert answer.status_code in (400, 422), (waves, answer.text)
    empty = http.post("/api/v1/fleet/rollouts", headers={
        "Authorization": f"Bearer {alice.token}"}, json={"group": "nobody", "run": released})
    assert empty.status_code == 400 and "no devices" in empty.json()["message"]
    again = http.post("/api/v1/fleet/devices", headers={
        "Authorization": f"Bearer {alice.token}"}, json={"name": "x1"})
    assert again.status_code == 409
    assert http.post("/ddi/enroll", json={"code": "tmle_not-a-code"}).status_code == 401
    bad_name = http.post("/api/v1/fleet/devices", headers={
        "Authorization": f"Bearer {alice.token}"}, json={"name": "../etc"})
    assert bad_name.status_code == 422 and "name" in bad_name.text
