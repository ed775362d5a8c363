"""Running foreign code is the operator's decision: command and image steps are off on a
server unless TINYMLAAS_EXTERNAL_STEPS allows them, for admins or for everyone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from security_support import API, Server, finished

from helpers import step_python
from tinymlaas.client import Client

COPY = [step_python(), "-c", "import shutil, sys; shutil.copy(sys.argv[1] + '/model.onnx', "
        "sys.argv[2])", "{in}", "{out}"]
INLINE = {"steps": [{"transformer": "external", "params": {"command": COPY}}],
          "evaluate": False}


def _refused(response, value: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "forbidden"
    assert "TINYMLAAS_EXTERNAL_STEPS" in body["message"]
    assert body["details"] == {"setting": "TINYMLAAS_EXTERNAL_STEPS", "value": value}


def _inputs(client: Client, tiny_onnx) -> tuple[str, str]:
    return client.upload_model(tiny_onnx).id, client.add_builtin_dataset("digits").id


def test_off_by_default_for_everyone_even_admins(server: Server, alice: Client,
                                                 mallory: Client, tiny_onnx) -> None:
    for user in (alice, mallory):
        with server.raw(user) as http:
            _refused(http.post(f"{API}/transformers", json={"name": "pwn", "command": ["id"]}),
                     "off")
            _refused(http.post(f"{API}/transformers", json={"name": "img", "image": "alpine"}),
                     "off")
            model, data = _inputs(user, tiny_onnx)
            _refused(http.post(f"{API}/runs", json={"model": model, "dataset": data,
                                                    "pipeline": INLINE}), "off")
            assert http.get(f"{API}/runs").json() == []
            assert not [t for t in http.get(f"{API}/transformers").json() if t["external"]]


def test_admins_only_and_promotion_on_the_server(make_server, tiny_onnx) -> None:
    server = make_server(TINYMLAAS_EXTERNAL_STEPS="admins")
    alice = server.user("alice@example.com")
    mallory = server.user("mallory@example.com")
    with server.raw(mallory) as http:
        _refused(http.post(f"{API}/transformers", json={"name": "pwn", "command": ["id"]}),
                 "admins")
        model, data = _inputs(mallory, tiny_onnx)
        _refused(http.post(f"{API}/runs", json={"model": model, "dataset": data,
                                                "pipeline": INLINE}), "admins")
    assert alice.register_transformer("copy", command=COPY).external
    model, data = _inputs(alice, tiny_onnx)
    run = alice.create_run(model, data, pipeline={"steps": ["copy"], "evaluate": False})
    assert finished(alice, run.id).status == "succeeded"

    # The operator promotes mallory with the CLI, on the server's own database.
    env = {**os.environ, "TINYMLAAS_HOME": str(server.home),
           "TINYMLAAS_DATABASE_URL": server.database_url}
    done = subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", "users", "promote",
                           "mallory@example.com"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mallory@example.com is now an admin" in done.stdout
    assert mallory.me().is_admin
    assert mallory.register_transformer("copy", command=COPY).external
    unknown = subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", "users", "promote",
                              "nobody@example.com"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 3
    assert "no account" in unknown.stdout + unknown.stderr


@pytest.mark.slow
def test_turning_steps_off_stops_reruns_of_old_runs(make_server, tiny_onnx) -> None:
    server = make_server(TINYMLAAS_EXTERNAL_STEPS="everyone")
    mallory = server.user("mallory@example.com")
    model, data = _inputs(mallory, tiny_onnx)
    run = mallory.create_run(model, data, pipeline=INLINE)
    assert finished(mallory, run.id).status == "succeeded"
    server.stop()
    server.start(TINYMLAAS_EXTERNAL_STEPS="off")
    with server.raw(mallory) as http:
        _refused(http.post(f"{API}/runs/{run.id}/rerun"), "off")
        _refused(http.post(f"{API}/runs/{run.id}/submit"), "off")
        assert len(http.get(f"{API}/runs").json()) == 1
