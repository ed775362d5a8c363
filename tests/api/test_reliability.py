"""Reliability: restarts leave no run stuck, concurrent submissions on one database,
uploads cut off mid-stream, and one error shape everywhere."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import (
    API,
    FAST,
    PASSWORD,
    assert_error_shape,
    make_settings,
    new_user,
    sleep_once,
    wait_for,
)
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.api.testing import serve_in_thread
from tinymlaas.client import Client
from tinymlaas.domain import RunStatus, StepStatus
from tinymlaas.server import create_app, open_studio


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(home: Path, database_url: str, port: int, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "TINYMLAAS_HOME": str(home), "TINYMLAAS_DATABASE_URL": database_url,
           "TINYMLAAS_RESUME_INTERRUPTED": "true" if resume else "false",
           "TINYMLAAS_EXTERNAL_STEPS": "everyone",
           "TINYMLAAS_LEASE_TTL_S": "2"}  # a killed server's runs are recovered 2 s later
    process = subprocess.Popen(
        [sys.executable, "-m", "tinymlaas.cli.main", "serve", "--port", str(port),
         "--log-level", "warning"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}{API}/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up)
    return process


def test_server_killed_mid_run_leaves_no_run_running(tmp_path: Path, database_url: str,
                                                     tiny_onnx: Path, shared_dir: Path) -> None:
    home, port, marker = tmp_path / "home", _free_port(), shared_dir / "slept"
    server = _start_server(home, database_url, port, resume=False)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        client.register("ed@example.com", PASSWORD)
        client.login("ed@example.com", PASSWORD)
        model = client.upload_model(tiny_onnx)
        data = client.add_builtin_dataset()
        client.register_transformer("slow", command=sleep_once(marker))
        run = client.create_run(model.id, data.id, pipeline={
            "steps": ["fuse", "slow"], "evaluate": False})
        wait_for(marker.exists)  # step 2 is sleeping inside the server's worker
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

        server = _start_server(home, database_url, port, resume=False)
        # Recovered (at start-up or by the reaper) once the killed server's lease expired.
        wait_for(lambda: client.get_run(run.id).status != RunStatus.running, 30)
        after = client.get_run(run.id)
        assert after.status == RunStatus.failed
        assert "interrupted" in (after.error or "")
        assert [s.status for s in after.steps] == [StepStatus.succeeded, StepStatus.failed]
        assert client.list_runs(status="running") == []

        # Submitting it again resumes: the finished first step comes from the cache.
        client.submit_run(run.id)
        final = client.follow(run.id)
        assert final.status == RunStatus.succeeded, final.error
        assert final.steps[0].status == StepStatus.cached
        assert final.output_sha is not None
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_restart_resubmits_interrupted_runs(studio, alice: Client, alice_model,
                                            alice_data) -> None:
    run = alice.create_run(alice_model.id, alice_data.id, pipeline=FAST)
    alice.follow(run.id)
    # As a server killed mid-run leaves it: running, its step running.
    meta = studio.services.meta
    meta.update_run(run.id, status=RunStatus.running, output_sha=None)
    meta.update_step(run.id, 0, status=StepStatus.running)
    restarted = create_app(studio=studio)
    assert restarted.state.recovered == {"interrupted": [run.id], "resumed": [run.id]}
    final = alice.follow(run.id)
    assert final.status == RunStatus.succeeded
    assert final.steps[0].status == StepStatus.cached


@pytest.fixture
def sqlite_studio(tmp_path: Path) -> Iterator[Studio]:
    studio = open_studio(make_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'meta.db'}"))
    yield studio
    studio.runs.shutdown(wait=True)
    studio.services.close()


def test_fifty_concurrent_submissions_on_sqlite(sqlite_studio: Studio, tiny_onnx: Path) -> None:
    studio = sqlite_studio
    app = create_app(studio=studio)
    with serve_in_thread(app) as server, TestClient(app) as http:
        alice = new_user(http, "alice@example.com")
        model = alice.upload_model(tiny_onnx)
        data = alice.add_builtin_dataset()
        results: list[int] = []
        errors: list[BaseException] = []

        def submit(index: int) -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    response = client.post(f"{API}/runs", headers={
                        "Authorization": f"Bearer {alice.token}"}, json={
                        "model": model.id, "dataset": data.id, "pipeline": FAST,
                        "name": f"run-{index}"})
                    results.append(response.status_code)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(results) == [201] * 50
        wait_for(lambda: all(r.status in {"succeeded", "failed"}
                             for r in studio.services.list_runs(model.project)), 240)
        runs = studio.services.list_runs(model.project)
        assert len(runs) == 50
        assert {r.status for r in runs} == {RunStatus.succeeded}, {r.error for r in runs}
        assert {r.name for r in runs} == {f"run-{i}" for i in range(50)}


def test_upload_cut_off_mid_stream_leaves_nothing(app, studio, tiny_onnx: Path) -> None:
    with serve_in_thread(app) as server, TestClient(app) as http:
        alice = new_user(http, "alice@example.com")
        uploads = studio.settings.home / "uploads"
        with socket.create_connection((server.host, server.port)) as sock:
            head = (f"POST {API}/models?filename=big.onnx HTTP/1.1\r\n"
                    f"Host: {server.host}\r\nAuthorization: Bearer {alice.token}\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: 10000000\r\n\r\n").encode()
            sock.sendall(head + tiny_onnx.read_bytes() + b"\x00" * 200_000)
            wait_for(lambda: uploads.is_dir() and any(uploads.iterdir()))  # streaming
        # The client is gone: the temp file goes, nothing is registered.
        wait_for(lambda: not any(uploads.iterdir()))
        assert alice.list_models() == []
        leftovers = [p for p in studio.settings.home.rglob("*")
                     if p.is_file() and (p.name.startswith(".") or p.parent == uploads)]
        assert leftovers == []
        blobs = [p for p in studio.services.artifacts.root.rglob("*") if p.is_file()]
        assert blobs == []  # no model blob (the digits dataset was never added here)
        # The server is fine afterwards.
        assert alice.upload_model(tiny_onnx).name == "digits"


def test_every_error_has_one_shape(http: TestClient, alice: Client) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    cases = [
        (http.get("/nowhere"), 404, "not_found"),
        (http.get(f"{API}/nowhere", headers=auth), 404, "not_found"),
        (http.delete(f"{API}/models", headers=auth), 405, "method_not_allowed"),
        (http.post(f"{API}/runs", headers=auth, content=b"{not json",
                   ), 422, "validation_error"),
        (http.post(f"{API}/projects", headers=auth, json={"name": ""}), 422,
         "validation_error"),
        (http.get(f"{API}/runs", headers=auth, params={"status": "bogus"}), 422,
         "validation_error"),
        (http.get(f"{API}/models"), 401, "unauthenticated"),
        (http.get(f"{API}/runs/run-0/steps/x/log", headers=auth), 422, "validation_error"),
        (http.get(f"{API}/models/nope", headers=auth), 404, "not_found"),
        # NUL characters, which PostgreSQL refuses, are stopped at the edge.
        (http.get(f"{API}/models/a%00b", headers=auth), 400, "invalid_input"),
        (http.get(f"{API}/runs", headers=auth, params={"project": "a\x00"}), 400,
         "invalid_input"),
        (http.post(f"{API}/projects", headers=auth, json={"name": "a\x00b"}), 422,
         "validation_error"),
        (http.post(f"{API}/auth/login", json={"email": "a\x00@b.io", "password": "x"}), 422,
         "validation_error"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert_error_shape(response.json(), code)
