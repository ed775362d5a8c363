"""``tinymlaas sites`` on this machine and against a real ``tinymlaas serve``; the commands
that used this machine's stores even with ``--server`` (transformers, users) now ask the
server or refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tinymlaas.api.testing import free_port, start_server, stop_server
from tinymlaas.client import Client

PASSWORD = "correct horse battery"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymlaas.cli.main", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def server(tmp_path: Path, database_url: str):
    env = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home"),
           "TINYMLAAS_DATABASE_URL": database_url, "TINYMLAAS_EXTERNAL_STEPS": "everyone"}
    env.pop("TINYMLAAS_SERVER", None)
    port = free_port()
    process = start_server(env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        with Client(url) as anonymous:
            anonymous.register("ops@example.com", PASSWORD, "ops")
            token = anonymous.login("ops@example.com", PASSWORD).access_token
        user = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "client-home"),
                "TINYMLAAS_SERVER": url, "TINYMLAAS_TOKEN": token}
        yield url, user, Client(url, token)
    finally:
        stop_server(process)


def test_sites_against_a_server(server) -> None:
    url, user, studio = server
    created = _cli(user, "sites", "create", "factory", "--json")
    assert created.returncode == 0, created.stderr
    site = json.loads(created.stdout)
    assert site["name"] == "factory" and site["token"].startswith("tmlsite_")
    assert site["project"] == studio.me().default_project

    worker = Client(url, site["token"])
    worker.site_heartbeat("factory", "worker-1", "plant-host", ["run-9/0"])
    listed = json.loads(_cli(user, "sites", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["factory"]
    assert [(w["id"], w["hostname"], w["running_steps"]) for w in listed[0]["workers"]] == \
        [("worker-1", "plant-host", ["run-9/0"])]
    table = _cli(user, "sites", "list")
    assert table.returncode == 0 and "plant-host" in table.stdout and "alive" in table.stdout
    assert "run-9/0" in table.stdout

    # the site's token is no user token: the user API refuses it
    for path in ("/api/v1/runs", "/api/v1/sites", "/api/v1/models"):
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {site['token']}"}
                         ).status_code == 401
    as_site = {**user, "TINYMLAAS_TOKEN": site["token"]}
    refused = _cli(as_site, "sites", "list")
    assert refused.returncode == 5 and refused.stderr.count("\n") == 1, refused.stderr

    duplicate = _cli(user, "sites", "create", "factory")
    assert duplicate.returncode == 4 and "already has a site" in duplicate.stderr
    bad = _cli(user, "sites", "create", "no spaces")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert _cli(user, "sites", "delete", "factory").returncode == 0
    gone = _cli(user, "sites", "delete", "factory")
    assert gone.returncode == 3 and "not found" in gone.stderr
    assert httpx.post(f"{url}/api/v1/sites/factory/heartbeat",
                      json={"worker_id": "worker-1", "hostname": "h"},
                      headers={"Authorization": f"Bearer {site['token']}"}).status_code == 401


def test_transformers_come_from_the_server_and_users_refuse_remote(server) -> None:
    _, user, studio = server
    studio.register_transformer("site-copy", command=[sys.executable, "-c", "pass"],
                                summary="copies its input")
    listed = _cli(user, "transformers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)}
    assert "site-copy" in names and "fuse" in names
    shown = _cli(user, "transformers", "show", "fuse", "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == studio.get_transformer("fuse").params_schema
    missing = _cli(user, "transformers", "show", "no-such-step")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1, missing.stderr
    for args in (["users", "list"], ["users", "promote", "ops@example.com"]):
        refused = _cli(user, *args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "without --server" in refused.stderr and refused.stderr.count("\n") == 1


def test_sites_on_this_machine(cli) -> None:
    code, out, err = cli("sites", "create", "lab", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["project"] == "default" and created["token"].startswith("tmlsite_")
    code, out, _ = cli("sites", "list", "--json")
    assert [(s["name"], s["workers"]) for s in json.loads(out)] == [("lab", [])]
    code, out, _ = cli("sites", "show", "lab")
    assert code == 0 and "no worker yet" in out
    assert cli("sites", "create", "lab2", "--project", "nope")[0] == 3
    assert cli("sites", "delete", "lab")[0] == 0
    code, out, _ = cli("sites", "list", "--json")
    assert json.loads(out) == []
