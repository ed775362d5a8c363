"""What ``tinymlaas serve``'s processes run (:func:`tinymlaas.server.served_app`), in a
process of its own, as the server starts it."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tinymlaas.api.testing import free_port, server_workers, start_server
from tinymlaas.server import GC_YOUNG_THRESHOLD

_PROBE = """
import gc, json
from tinymlaas.server import served_app
before = gc.get_threshold()
app = served_app()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "app": type(app).__name__}))
"""


def test_a_served_process_collects_cyclic_garbage_less_often(tmp_path: Path) -> None:
    """A young collection every 700 allocations (Python's default) set off a full
    collection every second or two under load, a pause of every request of the process
    (bench/api.py: PostgreSQL's p99 350 ms); the served process raises the first
    threshold and keeps the others."""
    env = {**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home")}
    env.pop("TINYMLAAS_DATABASE_URL", None)
    env.pop("TINYMLAAS_TRUSTED_PROXIES", None)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["app"] == "FastAPI"
    assert seen["before"] == list(gc.get_threshold())  # the default, as in this process
    assert seen["after"] == [GC_YOUNG_THRESHOLD, *seen["before"][1:]]
    assert 10 * seen["before"][0] < GC_YOUNG_THRESHOLD


def test_the_serving_processes_stop_when_the_main_process_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of ``tinymlaas serve``'s main process (the OOM killer's choice, say)
    leaves no process behind that goes on serving the port and executing runs."""
    port = free_port()
    server = start_server({**os.environ, "TINYMLAAS_HOME": str(tmp_path / "home")}, port)
    try:
        [worker] = server_workers(server)
        server.send_signal(signal.SIGKILL)  # the main process alone
        server.wait()
        gone = psutil.wait_procs([psutil.Process(worker)], timeout=60)[0]
        assert [p.pid for p in gone] == [worker], "the serving process outlived its server"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
