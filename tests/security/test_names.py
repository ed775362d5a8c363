"""Sharing never changes what a name means: lookups in a run's project find only that
project's models, datasets, templates and registered steps (and the built-ins); a name
that several of a user's projects use is a 409 listing the candidates."""

from __future__ import annotations

from security_support import API, Server, finished

from helpers import step_python
from tinymlaas.client import Client

COPY = [step_python(), "-c", "import shutil, sys; shutil.copy(sys.argv[1] + '/model.onnx', "
        "sys.argv[2])", "{in}", "{out}"]
FAST = {"steps": ["fuse"], "evaluate": False}


def test_shared_project_names_do_not_leak_into_own_project(make_server, tiny_onnx) -> None:
    server: Server = make_server(TINYMLAAS_EXTERNAL_STEPS="everyone")
    alice: Client = server.user("alice@example.com")
    bob: Client = server.user("bob@example.com")
    alice_model = alice.upload_model(tiny_onnx, name="net")
    alice_data = alice.add_builtin_dataset("digits", name="data")
    alice.create_template("tpl", FAST)
    alice.register_transformer("clean", command=COPY)
    alice_project = alice.me().default_project
    alice.share_project(alice_project, "bob@example.com", "editor")

    bob_model = bob.upload_model(tiny_onnx, name="net")
    bob_data = bob.add_builtin_dataset("digits", name="data")
    bob.create_template("tpl", {"steps": ["fuse", "fuse"], "evaluate": False})

    with server.raw(bob) as http:
        # A step registered in alice's project means nothing in bob's own project.
        response = http.post(f"{API}/runs", json={"model": "net", "dataset": "data",
                                                  "pipeline": {"steps": ["clean"]}})
        assert response.status_code in {400, 404, 422}, response.text
        assert "clean" in response.json()["message"]
        # Names in bob's project resolve to bob's objects, the template too.
        run = http.post(f"{API}/runs", json={"model": "net", "dataset": "data",
                                             "template": "tpl"}).json()
        assert run["model_id"] == bob_model.id and run["dataset_id"] == bob_data.id
        assert [s["transformer"] for s in run["steps"]] == ["fuse", "fuse"]
        # In alice's project (shared with bob), the same names are alice's.
        run = http.post(f"{API}/runs", json={"model": "net", "dataset": "data",
                                             "template": "tpl", "project": alice_project,
                                             "pipeline": None}).json()
        assert run["model_id"] == alice_model.id and run["dataset_id"] == alice_data.id
        assert [s["transformer"] for s in run["steps"]] == ["fuse"]
        # Without a project, a name both projects use is ambiguous: 409 with the ids.
        for path, ids in ((f"{API}/models/net", {alice_model.id, bob_model.id}),
                          (f"{API}/datasets/data", {alice_data.id, bob_data.id})):
            response = http.get(path)
            assert response.status_code == 409, response.text
            body = response.json()
            assert body["code"] == "conflict"
            assert {c["id"] for c in body["details"]["candidates"]} == ids
        assert http.get(f"{API}/templates/tpl").status_code == 409
        # Ids always work.
        assert http.get(f"{API}/models/{alice_model.id}").json()["id"] == alice_model.id
    # Alice's own lookups are unchanged by sharing: she sees only her project's names.
    assert alice.get_model("net").id == alice_model.id


def test_another_users_step_cache_tells_nothing(server: Server, alice: Client,
                                                mallory: Client, tiny_onnx) -> None:
    pipeline = {"steps": ["fuse"], "evaluate": True}

    def run(client: Client) -> dict:
        model = client.upload_model(tiny_onnx, name="same")
        data = client.add_builtin_dataset("digits", name="same")
        created = client.create_run(model.id, data.id, pipeline=pipeline)
        done = finished(client, created.id)
        assert done.status == "succeeded", done.error
        return done.model_dump()

    first = run(alice)
    again = finished(alice, alice.rerun(first["id"]).id).model_dump()
    assert [s["status"] for s in again["steps"]] == ["cached"]  # the cache works...
    theirs = run(mallory)
    # ... but only inside a project: the same content and pipeline run afresh for mallory.
    assert [s["status"] for s in theirs["steps"]] == ["succeeded"]
    assert theirs["steps"][0]["duration_s"] > 0
