"""Helpers of the hostile-user suite (imported by name: pytest puts this folder on
sys.path): a real ``tinymlaas serve`` process and polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tinymlaas.client import Client

API = "/api/v1"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


@dataclass
class Server:
    """A ``tinymlaas serve`` subprocess; ``start`` again after ``kill`` for a restart."""

    home: Path
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env: str) -> Server:
        self.env.update(env)
        self.home.mkdir(parents=True, exist_ok=True)
        full = {**os.environ, "TINYMLAAS_HOME": str(self.home),
                "TINYMLAAS_DATABASE_URL": self.database_url, "TINYMLAAS_STEP_TIMEOUT_S": "120",
                "TINYMLAAS_LOGIN_RATE_LIMIT": "5", **self.env}
        self.log = self.home / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tinymlaas.cli.main", "serve", "--port",
                 str(self.port), "--log-level", "warning"], env=full, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"the server exited:\n{self.log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{self.url}{API}/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up)
        return self

    def kill(self) -> None:
        """``kill -9`` the server: its main process and the worker processes that serve
        (a crash of the machine or an OOM kill of the group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def user(self, email: str, password: str = PASSWORD) -> Client:
        client = Client(self.url)
        client.register(email, password, email.split("@")[0])
        client.login(email, password)
        return client

    def raw(self, client: Client | None = None) -> httpx.Client:
        """A plain HTTP client, with ``client``'s token when given."""
        headers = {"Authorization": f"Bearer {client.token}"} if client else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def finished(client: Client, run_id: str, limit_s: float = 180.0):
    """The run once it has ended (fails the test after ``limit_s``)."""
    wait_for(lambda: client.get_run(run_id).status in {"succeeded", "failed", "cancelled"},
             limit_s)
    return client.get_run(run_id)
