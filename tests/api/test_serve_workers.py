"""``tinymlaas serve --workers 2`` on PostgreSQL: two server processes share the port and
the database, and each run is executed exactly once, whether it was submitted over HTTP
(to whichever process took the connection) or found pending by both processes when they
started."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from api_support import PASSWORD

from helpers import step_python
from tinymlaas.api.testing import free_port, server_workers, start_server, stop_server
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.service import Services
from tinymlaas.service.pipelines import parse_pipeline
from tinymlaas.service.users import AccountService

TERMINAL = {"succeeded", "failed", "cancelled"}


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    try:
        return start_server(env, port, workers=2, output=log.open("ab"))
    except RuntimeError as exc:
        pytest.fail(f"{exc}: {log.read_text()[-3000:]}")


def _marking_pipeline(marker: Path, tag: str) -> dict:
    """One command step that appends ``tag`` to ``marker`` each time it executes (the tag
    also makes each run's step key its own, so no run is a cache hit of another)."""
    script = ("import shutil, sys; open(sys.argv[3], 'a').write(sys.argv[4] + '\\n'); "
              "shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2] + '/model.onnx')")
    return {"steps": [{"external": {"command": [step_python(), "-c", script, "{in}", "{out}",
                                                str(marker), tag]}}],
            "evaluate": False}


def _wait_finished(client: Client, ids: list[str], timeout_s: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = {run_id: client.get_run(run_id).status for run_id in ids}
        if set(statuses.values()) <= TERMINAL:
            return statuses
        time.sleep(0.5)
    pytest.fail(f"runs did not finish: {statuses}")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_server_processes_on_postgresql_execute_each_run_exactly_once(
        database_url: str, tmp_path: Path, shared_dir: Path, tiny_onnx: Path) -> None:
    postgres_url = database_url  # a fresh database (CI=true fails without PostgreSQL)
    home, marker, log = tmp_path / "home", shared_dir / "executions.txt", tmp_path / "log"
    env = {**os.environ, "TINYMLAAS_HOME": str(home), "TINYMLAAS_DATABASE_URL": postgres_url,
           "TINYMLAAS_EXTERNAL_STEPS": "everyone", "TINYMLAAS_LOGIN_RATE_LIMIT": "1000",
           "TINYMLAAS_SERVER_RUNS": "2"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(env, port, log)
    try:
        assert len(server_workers(server)) == 2
        with Client(url) as client:
            client.register("w@example.com", PASSWORD)
            client.login("w@example.com", PASSWORD)
            token = client.create_token("workers").token
            model = client.upload_model(tiny_onnx, name="m")
        # Each submission on a connection of its own: the two processes share them.
        submitted = []
        for i in range(8):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}",
                                                     "Connection": "close"}) as http:
                response = http.post("/api/v1/runs", json={
                    "model": model.id, "pipeline": _marking_pipeline(marker, f"http-{i}")})
                assert response.status_code == 201, response.text
                submitted.append(response.json()["id"])
        with Client(url, token) as client:
            statuses = _wait_finished(client, submitted)
        assert set(statuses.values()) == {"succeeded"}, statuses
    finally:
        stop_server(server)

    # Runs left pending while no server was up: both processes queue them when they start.
    settings = Settings(home=home, database_url=postgres_url, external_steps="everyone")
    services = Services(settings)
    try:
        accounts = AccountService(services)
        user = accounts.store.find_user("w@example.com")
        assert user is not None
        ws = accounts.workspace(user[0])
        waiting = [ws.create_run(parse_pipeline(_marking_pipeline(marker, f"start-{i}"),
                                                "pipeline"), model=model.id).id
                   for i in range(6)]
    finally:
        services.close()
    server = _serve(env, port, log)
    try:
        with Client(url, token) as client:
            statuses = _wait_finished(client, waiting)
            assert set(statuses.values()) == {"succeeded"}, statuses
            time.sleep(2)  # a second execution, had there been one, would have begun
            assert {r.id for r in client.list_runs(status="running")} == set()
    finally:
        stop_server(server)
    executions = Counter(marker.read_text().split())
    expected = [f"http-{i}" for i in range(8)] + [f"start-{i}" for i in range(6)]
    assert sorted(executions) == sorted(expected)
    assert set(executions.values()) == {1}, executions
