"""Deleting over the API, as the owner, a viewer and a stranger would try it."""

from __future__ import annotations

from pathlib import Path

from api_support import API, FAST, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


def test_delete_as_owner_viewer_and_stranger(http: TestClient, alice: Client, bob: Client,
                                             tiny_onnx: Path) -> None:
    lab = alice.create_project("lab")
    model = alice.upload_model(tiny_onnx, name="m", project=lab.id)
    data = alice.add_builtin_dataset("digits", project=lab.id)
    run = alice.follow(alice.create_run(model.id, data.id, pipeline=FAST, project=lab.id).id)
    assert run.status == "succeeded", run.error
    paths = [f"/runs/{run.id}", f"/models/{model.id}", f"/datasets/{data.id}",
             f"/projects/{lab.id}"]

    for path in paths:  # a stranger: the 404 of something that does not exist
        response = http.delete(API + path, headers=_auth(bob))
        assert response.status_code == 404, (path, response.text)
        assert_error_shape(response.json())
    alice.share_project(lab.id, "bob@example.com", "viewer")
    for path in paths:  # a viewer may look but not delete
        response = http.delete(API + path, headers=_auth(bob))
        assert response.status_code == 403, (path, response.text)

    # the model is used by a run: 409 naming it, unless forced
    in_use = http.delete(f"{API}/models/{model.id}", headers=_auth(alice))
    assert in_use.status_code == 409 and in_use.json()["details"]["runs"] == [run.id]
    assert alice.get_run(run.id).id == run.id
    deleted = alice.delete_model(model.id, force=True)
    assert deleted.runs == [run.id] and deleted.models == [model.id]
    assert deleted.freed_artifacts >= 2 and deleted.freed_bytes > 0
    assert http.get(f"{API}/runs/{run.id}", headers=_auth(alice)).status_code == 404

    everything = alice.delete_project(lab.id)
    assert everything.datasets == [data.id]
    assert lab.id not in {p.id for p in alice.list_projects()}
    assert lab.id not in {p.id for p in bob.list_projects()}
    personal = http.delete(f"{API}/projects/{alice.me().default_project}",
                           headers=_auth(alice))
    assert personal.status_code == 409 and "personal project" in personal.json()["message"]

