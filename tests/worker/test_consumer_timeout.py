"""A step that runs longer than RabbitMQ's ``consumer_timeout`` runs once.

RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged longer than
``consumer_timeout`` (PRECONDITION_FAILED) and delivers the message again. A site worker
acknowledges a step's message only when the step has ended (late acknowledgement), so a
long step outlives it. Against a RabbitMQ node of the test's own whose ``consumer_timeout``
is 5 s (checked every second instead of every minute), with two workers at the site: the
run succeeds, its step starts once (the redelivered message finds the job held by the
first worker's live lease, or ended, and is dropped), the broker did time the consumer
out, and both workers still take new steps afterwards (the closed channel is a channel
error, which Celery's worker retries like a lost connection only with
``broker_channel_error_retry``; without it the worker shuts down once its step ends).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import need_service, step_python
from sites_harness import reachable, running_studio
from tinymlaas.api.testing import free_port

#: RabbitMQ's own start script: it runs the node as the calling user (the one on the PATH
#: may be a wrapper that switches to the ``rabbitmq`` user, who cannot enter our files).
_SERVER_SCRIPTS = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
#: A delivery unacknowledged this long (ms) closes its channel ...
CONSUMER_TIMEOUT_MS = 5000
#: ... checked this often (ms; RabbitMQ's channels check once a minute by default).
TICK_MS = 1000
#: The step's length: well past the timeout and its check.
STEP_S = 15


def _server_script() -> str | None:
    for path in _SERVER_SCRIPTS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("rabbitmq-server")


@contextlib.contextmanager
def private_rabbitmq(root: Path) -> Iterator[tuple[int, Path]]:
    """A RabbitMQ node of its own (node name, ports, cookie, data, logs, configuration),
    beside any node the machine runs; yields its AMQP port and its log file."""
    script = _server_script()
    need_service(script is not None, "rabbitmq-server (the RabbitMQ broker's start script)")
    assert script is not None
    home, mnesia, logs = root / "home", root / "mnesia", root / "log"
    for path in (home, mnesia, logs):
        path.mkdir(parents=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16))
    cookie.chmod(0o400)
    (root / "enabled_plugins").write_text("")
    (root / "rabbitmq-env.conf").write_text("")
    (root / "rabbitmq.conf").write_text(f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
                                        "loopback_users.guest = true\n")
    (root / "advanced.config").write_text(
        f"[{{rabbit, [{{channel_tick_interval, {TICK_MS}}}]}}].\n")
    node = f"tmlct-{secrets.token_hex(4)}"
    port, dist_port = free_port(), free_port()
    while dist_port == port:
        dist_port = free_port()
    env = {**os.environ, "HOME": str(home), "RABBITMQ_NODENAME": f"{node}@localhost",
           "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_MNESIA_BASE": str(mnesia),
           "RABBITMQ_LOG_BASE": str(logs), "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
           "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
           "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
               "-kernel inet_dist_use_interface {127,0,0,1}",
           "ERL_EPMD_ADDRESS": "127.0.0.1"}
    output = root / "server.out"
    process = subprocess.Popen([script], env=env, cwd=root, start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=output.open("ab"),
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not reachable(port):
            assert process.poll() is None and time.monotonic() < deadline, \
                "the private RabbitMQ node did not start: " + output.read_text()[-3000:]
            time.sleep(0.3)
        yield port, logs / f"{node}@localhost.log"
    finally:
        # SIGTERM: the start script stops the node; then nothing of its group may remain
        # (the node's epmd, if it started one, is a daemon of its own session and shared).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _slow_copy(marker: Path, seconds: int) -> dict:
    """One command step that notes its start and end in ``marker`` and copies its input."""
    script = ("import shutil, sys, time; m = open(sys.argv[3], 'a'); "
              "m.write('start\\n'); m.flush(); "
              f"time.sleep({seconds}); shutil.copy(sys.argv[1] + '/model.onnx', "
              "sys.argv[2] + '/model.onnx'); m.write('end\\n'); m.flush()")
    return {"steps": [{"external": {"command": [step_python(), "-c", script, "{in}",
                                                "{out}", str(marker)]}}],
            "evaluate": False}


def test_a_step_longer_than_the_consumer_timeout_runs_once(tmp_path: Path,
                                                          shared_dir: Path) -> None:
    (tmp_path / "studio").mkdir()
    with private_rabbitmq(tmp_path / "rabbitmq") as (port, broker_log), \
            running_studio(tmp_path / "studio", f"amqp://guest:guest@127.0.0.1:{port}//",
                           port, "the private RabbitMQ node") as studio:
        site = studio.client.create_site("mill")
        studio.start_worker("mill", site.token, log_name="mill-1")
        studio.start_worker("mill", site.token, log_name="mill-2")
        logs = [studio.root / "mill-1.log", studio.root / "mill-2.log"]

        def worker_logs() -> str:
            return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)

        marker = shared_dir / "executions.txt"
        run = studio.client.create_run(studio.model.id, site="mill",
                                       pipeline=_slow_copy(marker, STEP_S))
        done = studio.wait_run(run.id)
        assert done.status == "succeeded", (done.error, worker_logs())
        assert done.output_sha == hashlib.sha256(studio.model_path.read_bytes()).hexdigest()
        # The broker timed the first worker's delivery out and closed its channel ...
        broker = broker_log.read_text()
        assert "timed out waiting for delivery acknowledgement" in broker, broker[-3000:]
        assert "channel exception precondition_failed" in broker, broker[-3000:]
        # ... and delivered the message again: a worker took it, found the job held by
        # the first worker's live lease (or ended) and dropped it.
        text = "\n".join(log.read_text() for log in logs)
        claims = re.findall(r"job (\S+) claimed: attempt (\d+)", text)
        assert len(claims) == 1 and claims[0][1] == "1", (claims, worker_logs())
        job_id = claims[0][0]
        assert f"job {job_id} dropped: " in text, worker_logs()
        lines = marker.read_text().split()
        assert lines == ["start", "end"], lines
        # Both workers are alive and take new steps: two at once, one each (a worker
        # takes one message at a time and holds it until its step ends).
        runs = [studio.client.create_run(studio.model.id, site="mill",
                                         pipeline=_slow_copy(shared_dir / f"after-{i}", 1))
                for i in range(2)]
        for after in runs:
            finished = studio.wait_run(after.id, timeout_s=120)
            assert finished.status == "succeeded", (finished.error, worker_logs())
        for log in logs:
            claimed = re.findall(r"job \S+ claimed: attempt", log.read_text())
            assert len(claimed) >= 1, worker_logs()
        assert len(re.findall(r"job \S+ claimed: attempt", "\n".join(
            log.read_text() for log in logs))) == 3, worker_logs()
        assert all(worker.poll() is None for worker in studio.workers), worker_logs()
