"""Helpers for testing against a real server: run the app with uvicorn in a background
thread on a free localhost port, or ``tinymlaas serve`` as a process, and make a tiny ONNX
classifier for the digits dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

__all__ = ["LiveServer", "free_port", "postgres_database", "sandbox_python", "serve_in_thread",
           "server_workers", "start_server", "stop_server", "write_digits_onnx"]


@dataclass
class LiveServer:
    url: str
    host: str
    port: int


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1",
                    startup_timeout_s: float = 30.0) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn on ``host`` and a free port until the block ends."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://{host}:{port}", host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_digits_onnx(path: Path, seed: int = 0) -> Path:
    """A logistic-regression classifier for scikit-learn's digits as ONNX
    (input ``[N, 1, 8, 8]`` float32, output ``[N, 10]`` logits), trained in a second."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    X = (digits.images / 16.0).reshape(len(digits.images), -1)
    clf = LogisticRegression(max_iter=300, random_state=seed).fit(X, digits.target)
    weights = clf.coef_.T.astype(np.float32)  # (64, 10)
    bias = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])],
        "digits_logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@contextmanager
def postgres_database(admin_url: str, prefix: str = "tinymlaas_bench") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``admin_url`` for the block: its
    URL. Dropped afterwards (connections still open to it are ended)."""
    import uuid

    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + name
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


#: Pythons a command step may be given, in order of preference.
PYTHONS = (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3")


def sandbox_python() -> str | None:
    """A Python that command steps can run: this one, unless steps run as the sandbox user
    (as root) and cannot reach it (a venv under a private home); then the system's. None
    when the sandbox user can run none of :data:`PYTHONS`."""
    for exe in PYTHONS:
        if not os.path.exists(exe):
            continue
        if os.geteuid() != 0:
            return exe
        try:
            probe = subprocess.run([exe, "-c", "pass"], user="nobody", capture_output=True,
                                   check=False, env={"PATH": "/usr/bin:/bin"}, cwd="/")
        except OSError:
            continue
        if probe.returncode == 0:
            return exe
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(env: dict[str, str], port: int, *, workers: int = 1, output: Any = None,
                 timeout_s: float = 120) -> subprocess.Popen:
    """``tinymlaas serve`` in its own process group, once its health check answers.

    Raises:
        RuntimeError: The server stopped, or did not answer within ``timeout_s`` (killed).
    """
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "tinymlaas.cli.main", "serve", "--port", str(port),
         "--log-level", "warning", *(["--workers", str(workers)] if workers > 1 else [])],
        env=env, start_new_session=True,
        stdout=output if output is not None else subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped at start (exit code {process.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s")


def server_workers(process: subprocess.Popen) -> list[int]:
    """The pids of a :func:`start_server` server's worker processes, the ones that answer
    requests: the children its main process forked to serve (not, say, multiprocessing's
    resource tracker)."""
    import psutil

    return sorted(child.pid for child in psutil.Process(process.pid).children()
                  if "serve" in child.cmdline())


def stop_server(process: subprocess.Popen) -> None:
    """Stop a :func:`start_server` process group: SIGTERM, then SIGKILL after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
