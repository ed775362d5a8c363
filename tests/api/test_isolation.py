"""A user sees and touches only their own projects and those shared with them: anything
of another user's is a 404, exactly like something that does not exist."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from api_support import API, FAST, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client


@pytest.fixture
def alice_world(alice: Client, alice_model, alice_data, tmp_path: Path) -> dict[str, str]:
    """Alice's project with a model, a dataset, a finished run, a template, an external
    transformer, a webhook and a custom device."""
    run = alice.create_run(alice_model.id, alice_data.id, pipeline=FAST, name="mine")
    run = alice.follow(run.id)
    assert run.status == "succeeded", run.error
    alice.create_template("my-fuse", FAST)
    alice.register_transformer("copy", command=["cp", "-r", "{in}/.", "{out}"])
    hook = alice.create_webhook("http://127.0.0.1:9/hook")
    alice.add_device(name="lab-board", arch="cortex-m4", clock_mhz=80, ram_kb=128,
                     flash_kb=512)
    return {"project": alice.me().default_project, "model": alice_model.id,
            "model_name": alice_model.name, "dataset": alice_data.id, "run": run.id,
            "run_name": run.name, "sha": run.output_sha or "", "hook": hook.id}


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


def test_every_resource_of_another_user_is_404(http: TestClient, alice: Client, bob: Client,
                                                alice_world: dict[str, str],
                                                tiny_onnx: Path) -> None:
    w = alice_world
    run = w["run"]
    reads = [f"/models/{w['model']}", f"/models/{w['model_name']}",
             f"/models/{w['model']}/file", f"/datasets/{w['dataset']}",
             f"/datasets/{w['dataset']}/file", f"/runs/{run}", f"/runs/{w['run_name']}",
             f"/runs/{run}/logs", f"/runs/{run}/steps/0/log", f"/runs/{run}/metrics",
             f"/runs/{run}/artifacts", f"/runs/{run}/artifacts/{w['sha']}",
             f"/runs/{run}/output", f"/runs/{run}/export", f"/runs/{run}/events",
             f"/projects/{w['project']}", f"/projects/{w['project']}/members",
             "/templates/my-fuse", "/transformers/copy", "/devices/lab-board"]
    writes = [
        ("POST", f"/runs/{run}/submit", None), ("POST", f"/runs/{run}/cancel", None),
        ("POST", f"/runs/{run}/rerun", None),
        ("POST", "/runs/compare", {"runs": [run]}),
        ("POST", "/runs", {"model": w["model"], "dataset": w["dataset"], "pipeline": FAST,
                           "project": w["project"]}),
        ("POST", "/runs", {"model": w["model"], "dataset": w["dataset"], "pipeline": FAST}),
        ("POST", "/datasets/builtin", {"project": w["project"]}),
        ("POST", "/templates", {"name": "t", "pipeline": FAST, "project": w["project"]}),
        ("POST", "/webhooks", {"url": "http://127.0.0.1:9/x", "project": w["project"]}),
        ("POST", "/devices", {"name": "d", "arch": "x", "clock_mhz": 1, "ram_kb": 1,
                              "flash_kb": 1, "project": w["project"]}),
        ("POST", f"/projects/{w['project']}/members", {"email": "bob@example.com"}),
        ("DELETE", f"/webhooks/{w['hook']}", None),
    ]
    for path in reads:
        response = http.get(API + path, headers=_auth(bob))
        assert response.status_code == 404, (path, response.status_code)
        assert_error_shape(response.json(), "not_found")
        assert alice.request("GET", path).status_code == 200, path
    for method, path, body in writes:
        response = http.request(method, API + path, headers=_auth(bob), json=body)
        assert response.status_code == 404, (method, path, response.status_code)
        assert_error_shape(response.json(), "not_found")
    upload = http.post(f"{API}/models", params={"project": w["project"],
                                                "filename": "x.onnx"},
                       content=tiny_onnx.read_bytes(), headers=_auth(bob))
    assert upload.status_code == 404

    # Lists hold only Bob's own things.
    assert bob.list_models() == [] and bob.list_datasets() == [] and bob.list_runs() == []
    assert bob.list_webhooks() == []
    assert [p.id for p in bob.list_projects()] == [bob.me().default_project]
    assert "copy" not in {t.name for t in bob.list_transformers()}
    assert "my-fuse" not in {t.name for t in bob.list_templates()}
    assert "lab-board" not in {d.name for d in bob.list_devices()}
    # Bob may use the same name in his own project; Alice's device is untouched.
    mine = bob.add_device(name="lab-board", arch="cortex-m0plus", clock_mhz=48, ram_kb=32,
                          flash_kb=256)
    assert mine.project == bob.me().default_project
    assert alice.get_device("lab-board").arch == "cortex-m4"
    # ... and nothing of Alice's changed.
    assert alice.get_run(run).status == "succeeded"
    assert [h.id for h in alice.list_webhooks()] == [w["hook"]]
    assert len(alice.list_runs()) == 1


def test_sharing_grants_exactly_the_role(http: TestClient, alice: Client, bob: Client,
                                         alice_world: dict[str, str], tmp_path: Path) -> None:
    w = alice_world
    member = alice.share_project(w["project"], "bob@example.com", role="viewer")
    assert member.role == "viewer"
    assert bob.get_run(w["run"]).id == w["run"]
    assert [m.model_dump(include={"email", "role"}) for m in bob.list_members(w["project"])] \
        == [{"email": "alice@example.com", "role": "owner"},
            {"email": "bob@example.com", "role": "viewer"}]
    assert {p.id for p in bob.list_projects()} == {w["project"], bob.me().default_project}
    target = tmp_path / "bob-downloads"
    target.mkdir()
    downloaded = bob.download_output(w["run"], target)
    assert downloaded.parent == target and downloaded.name == "mine-model.onnx"
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == w["sha"]
    # A viewer may read but not change.
    forbidden = http.post(f"{API}/runs/{w['run']}/rerun", headers=_auth(bob))
    assert forbidden.status_code == 403
    assert_error_shape(forbidden.json(), "forbidden")
    share = http.post(f"{API}/projects/{w['project']}/members", headers=_auth(bob),
                      json={"email": "bob@example.com", "role": "editor"})
    assert share.status_code == 403
    # An editor may run things in the project.
    alice.share_project(w["project"], "bob@example.com", role="editor")
    rerun = bob.rerun(w["run"])
    assert rerun.project == w["project"]
    assert bob.follow(rerun.id).status == "succeeded"
    # Unsharing takes it all away again.
    alice.unshare_project(w["project"], bob.me().id)
    assert http.get(f"{API}/runs/{w['run']}", headers=_auth(bob)).status_code == 404
