"""What the site-worker tests share: a real ``tinymlaas serve`` with a broker
(TINYMLAAS_BROKER_URL), its user, a model and a dataset, and real ``tinymlaas worker``
processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import need_service
from tinymlaas.api.testing import free_port, start_server, stop_server, write_digits_onnx
from tinymlaas.client import Client

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"
PASSWORD = "correct horse battery"
TERMINAL = {"succeeded", "failed", "cancelled", "degraded"}
QUANTIZE = {"steps": [{"quantize-static": {"format": "qdq", "per_channel": True,
                                           "num_samples": 64}}]}


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


class Studio:
    """A real server process with a broker, its user and the worker processes started."""

    def __init__(self, root: Path, broker: str) -> None:
        self.root = root
        self.home = root / "home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TINYMLAAS_HOME": str(self.home),
                    "TINYMLAAS_BROKER_URL": broker, "TINYMLAAS_LOGIN_RATE_LIMIT": "1000",
                    "TINYMLAAS_SITE_LEASE_TTL_S": "4", "TINYMLAAS_LEASE_TTL_S": "3",
                    "TINYMLAAS_EXTERNAL_STEPS": "everyone"}
        self.log = root / "server.log"
        self.server = self._start()
        self.workers: list[subprocess.Popen] = []
        self.client = Client(self.url)
        self.client.register("owner@example.com", PASSWORD)
        self.client.login("owner@example.com", PASSWORD)
        self.model_path = write_digits_onnx(root / "digits.onnx")
        self.model = self.client.upload_model(self.model_path, name="m")
        self.dataset = self.client.add_builtin_dataset("digits", name="d")

    def _start(self) -> subprocess.Popen:
        try:
            return start_server(self.env, self.port, output=self.log.open("ab"))
        except RuntimeError as exc:
            pytest.fail(f"{exc}: {self.log.read_text()[-3000:]}")

    def restart(self, down_s: float) -> None:
        """Stop the server, leave it down ``down_s`` seconds, start it on the same home."""
        stop_server(self.server)
        time.sleep(down_s)
        self.server = self._start()

    def start_worker(self, site: str, token: str, *, wait: bool = True,
                     log_name: str = "worker", prefix: Sequence[str] = ()) -> subprocess.Popen:
        """``tinymlaas worker`` in its own process group, without the server's settings (a
        worker learns its broker from the server); ``prefix`` comes before the command (a
        program that runs it, e.g. in a network namespace)."""
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TINYMLAAS_")}
        before = {w.id for w in self.client.get_site(site).workers}
        worker = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tinymlaas.cli.main", "worker", "--server", self.url,
             "--site", site, "--token", token, "--data-root", str(data),
             "--work-dir", str(self.root / f"{log_name}-work")],
            env=env, start_new_session=True, stderr=subprocess.STDOUT,
            stdout=(self.root / f"{log_name}.log").open("ab"))
        self.workers.append(worker)
        if wait:
            deadline = time.monotonic() + 60
            while {w.id for w in self.client.get_site(site).workers} <= before:
                if worker.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the worker did not say it is alive: "
                                + (self.root / f"{log_name}.log").read_text()[-3000:])
                time.sleep(0.2)
            time.sleep(1.0)  # its consumer subscribes to the queue after the first heartbeat
        return worker

    def wait_run(self, run_id: str, timeout_s: float = 240) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.client.get_run(run_id)
            if run.status in TERMINAL:
                return run
            time.sleep(0.3)
        pytest.fail(f"run {run_id} did not finish: {self.client.get_run(run_id).status}; "
                    + self.log.read_text()[-2000:])

    def stop_workers(self) -> None:
        """SIGTERM to each worker's process group (SIGKILL after 30 s)."""
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()

    def close(self) -> None:
        self.stop_workers()
        self.client.close()
        stop_server(self.server)


@contextlib.contextmanager
def running_studio(root: Path, broker: str, port: int, name: str) -> Iterator[Studio]:
    need_service(reachable(port), f"{name} on 127.0.0.1:{port}")
    studio = Studio(root, broker)
    try:
        yield studio
    finally:
        studio.close()
