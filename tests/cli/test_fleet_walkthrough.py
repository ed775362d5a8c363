"""Over the air, end to end with real processes: ``tinymlaas serve``, the CLI against it, and
``tinymlaas agent`` installing a release, then rolling back one whose health check fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tinymlaas.api.testing import free_port, start_server, stop_server, write_digits_onnx
from tinymlaas.client import Client

PASSWORD = "correct horse battery"


def _cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


@pytest.fixture
def server(tmp_path: Path, database_url: str):
    env = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home"),
           "TINYMLAAS_DATABASE_URL": database_url}
    env.pop("TINYMLAAS_SERVER", None)
    port = free_port()
    process = start_server(env, port)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        stop_server(process)


def test_enroll_deploy_install_and_roll_back(server, tmp_path: Path) -> None:
    url, env = server
    with Client(url) as anonymous:
        anonymous.register("ops@example.com", PASSWORD, "ops")
        token = anonymous.login("ops@example.com", PASSWORD).access_token
    user = {**env, "TINYMLAAS_SERVER": url, "TINYMLAAS_TOKEN": token}
    studio = Client(url, token)

    # 1. a user enrolls a device
    enrolled = json.loads(_cli(user, "fleet", "enroll", "dev1", "--group", "lab",
                               "--json").stdout)
    assert enrolled["name"] == "dev1" and enrolled["groups"] == ["lab"]
    code = enrolled["enrollment_code"]

    # 2. the agent trades the code for a credential and installs nothing yet
    root = tmp_path / "device"
    agent_env = {k: v for k, v in env.items() if not k.startswith("TINYMLAAS_")}
    first = _cli(agent_env, "agent", "--server", url, "--token", code, "--root", str(root),
                 "--once", "--json")
    identity = json.loads((root / "agent.json").read_text())
    assert identity["controller_id"] == enrolled["id"] and identity["token"] != code
    assert (root / "agent.json").stat().st_mode & 0o077 == 0
    assert not (root / "current").exists(), first.stdout
    # the code was used up: a second device cannot enroll with it
    reused = httpx.post(f"{url}/ddi/enroll", json={"code": code})
    assert reused.status_code == 401

    # 3. a run ending in an installer is deployed; the agent installs, checks and commits
    model = studio.upload_model(write_digits_onnx(tmp_path / "digits.onnx"), name="digits")
    data = studio.add_builtin_dataset("digits")
    run = studio.create_run(model.id, data.id,
                            pipeline={"steps": ["package-python"], "evaluate": False})
    assert studio.follow(run.id).status == "succeeded"
    rollout = json.loads(_cli(user, "deploy", run.id, "--group", "lab", "--json").stdout)
    assert rollout["state"] == "running" and rollout["counts"] == {"offered": 1}
    installed = _cli(agent_env, "agent", "--server", url, "--root", str(root), "--once",
                     "--json")
    summary = json.loads(installed.stdout)
    assert summary["outcome"] == "committed", installed.stdout + installed.stderr
    current = (root / "current").resolve()
    assert current.parent == (root / "slots").resolve()
    assert list(current.rglob("model.onnx")), "the release's files are in the slot"
    good = studio.rollout(rollout["id"])
    assert good.state.value == "finished" and good.counts == {"succeeded": 1}
    device = studio.fleet_device("dev1")
    assert device.version == good.version and device.health == "ok"

    # 4. a second release whose health check cannot pass is rolled back by the agent
    bad = studio.deploy("lab", run=run.id, max_latency_ms=1e-6)
    assert bad.version == good.version + 1
    failed = _cli(agent_env, "agent", "--server", url, "--root", str(root), "--once",
                  "--json", check=False)
    assert json.loads(failed.stdout)["outcome"] == "rolled_back", failed.stdout + failed.stderr
    assert (root / "current").resolve() == current, "back on the committed slot"

    # 5. the API shows one success and one rolled-back failure
    assert studio.rollout(good.id).counts == {"succeeded": 1}
    after = studio.rollout(bad.id)
    assert after.counts == {"rolled_back": 1}
    assert "latency" in after.actions[0].message
    device = studio.fleet_device("dev1")
    assert device.version == good.version
    stages = [e.stage for e in device.history]
    assert stages[0] == "rolled_back" and "committed" in stages and "health" in stages
    listed = json.loads(_cli(user, "fleet", "list", "--json").stdout)
    assert [(d["name"], d["version"]) for d in listed] == [("dev1", good.version)]
    wide = {**user, "COLUMNS": "250"}
    shown = _cli(wide, "fleet", "rollout", bad.id).stdout
    assert "dev1" in shown and "rolled_back" in shown and f"v{bad.version}" in shown
    table = _cli(wide, "fleet", "rollouts").stdout
    assert good.id in table and bad.id in table and "succeeded" in table
    history = _cli(wide, "fleet", "show", "dev1").stdout
    assert "committed" in history and "rolled_back" in history
    studio.close()
