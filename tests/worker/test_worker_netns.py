"""A site worker that can reach only the server's API and the broker.

The worker runs in a network namespace of its own (``netns_jail.py``: only ``lo``, no
route out), where two TCP ports of 127.0.0.1 lead out, each through a Unix socket to the
same port on the host: the API's and RabbitMQ's. Everything else (PostgreSQL, Redis, a
listener of the test's own, the host's other addresses) is unreachable from there, and the
worker still runs a quantize pipeline's step and evaluations at its site.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import need_service
from sites_harness import QUANTIZE, RABBITMQ, Studio, running_studio

JAIL = Path(__file__).with_name("netns_jail.py")
BROKER_PORT = 5672
SIOCGIFADDR = 0x8915

# Connects to each (label, host, port, kind) and says "ok" or why not. "http" and "amqp"
# also exchange a first message, so a forwarded port proves it leads to the service.
PROBE = r"""
import json, socket, sys
out = {}
for label, host, port, kind in json.loads(sys.argv[1]):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(10)
            if kind == "http":
                s.sendall(b"GET /api/v1/health HTTP/1.0\r\nHost: studio\r\n\r\n")
                assert s.recv(7) == b"HTTP/1.", "not an HTTP answer"
            elif kind == "amqp":
                s.sendall(b"AMQP\x00\x00\x09\x01")
                assert s.recv(1) == b"\x01", "not an AMQP connection.start"
        out[label] = "ok"
    except (OSError, AssertionError) as exc:
        out[label] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@dataclass
class Fence:
    studio: Studio
    prefix: list[str]  # runs a command in a namespace that reaches only the API and broker


def _namespaces_work(root: Path) -> bool:
    result = subprocess.run([sys.executable, str(JAIL), "jail", "--sock-dir", str(root), "--",
                             sys.executable, "-c", "pass"], capture_output=True, timeout=60)
    return result.returncode == 0


def _host_addresses() -> list[str]:
    """The host's IPv4 addresses other than loopback ones (SIOCGIFADDR per interface)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(s, SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # down, or no IPv4 address
                continue
            address = socket.inet_ntoa(answer[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


def _net_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture(scope="module")
def fence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fence]:
    root = tmp_path_factory.mktemp("netns")
    need_service(_namespaces_work(root), "network namespaces (unshare --net)")
    with running_studio(root, RABBITMQ, BROKER_PORT, "RabbitMQ") as studio:
        sockets = root / "sockets"
        sockets.mkdir()
        ports = [arg for port in (studio.port, BROKER_PORT) for arg in ("--port", str(port))]
        host = subprocess.Popen([sys.executable, str(JAIL), "host", "--sock-dir", str(sockets),
                                 *ports], stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert host.stdout is not None
            assert host.stdout.readline() == b"ready\n", "the host side's forwarder failed"
            yield Fence(studio, [sys.executable, str(JAIL), "jail", "--sock-dir", str(sockets),
                                 *ports, "--"])
        finally:
            studio.stop_workers()  # while their way to the API is still open
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
            host.stdout.close()


def _probe(prefix: list[str], targets: list[tuple[str, str, int, str]]) -> dict[str, str]:
    result = subprocess.run([*prefix, sys.executable, "-c", PROBE, json.dumps(targets)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_namespace_leads_only_to_the_api_and_the_broker(fence: Fence) -> None:
    addresses = _host_addresses()
    need_service(bool(addresses), "an IPv4 address other than loopback on this machine")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))  # a service of the test's own, on every address
        listener.listen(16)
        own = listener.getsockname()[1]
        open_ = [("api", "127.0.0.1", fence.studio.port, "http"),
                 ("broker", "127.0.0.1", BROKER_PORT, "amqp")]
        own_targets = [(f"own {a}", a, own, "tcp") for a in ("127.0.0.1", *addresses)]
        others = [("postgresql", "127.0.0.1", 5432, "tcp"), ("redis", "127.0.0.1", 6379, "tcp"),
                  ("rabbitmq on another address", addresses[0], BROKER_PORT, "tcp")]
        targets = open_ + own_targets + others
        on_host = _probe([], targets)
        inside = _probe(fence.prefix, targets)
    # From the host, the API, the broker and the test's own service answer ...
    for label, *_ in open_ + own_targets:
        assert on_host[label] == "ok", on_host
    # ... and from the namespace, only the API and the broker do.
    assert inside["api"] == "ok" and inside["broker"] == "ok", inside
    for label, *_ in own_targets + others:
        assert inside[label] != "ok", inside


def test_a_worker_that_reaches_only_the_api_and_the_broker_runs_the_sites_steps(
        fence: Fence) -> None:
    studio = fence.studio
    site = studio.client.create_site("fenced")
    worker = studio.start_worker("fenced", site.token, log_name="fenced", prefix=fence.prefix)
    assert _net_namespace(worker.pid) != _net_namespace("self")  # it is in the namespace
    run = studio.client.create_run(studio.model.id, studio.dataset.id, pipeline=QUANTIZE,
                                   site="fenced")
    done = studio.wait_run(run.id)
    log = (studio.root / "fenced.log").read_text()
    assert done.status == "succeeded", (done.error, log[-3000:])
    # The step and both evaluations ran on the fenced worker: it claimed each once.
    claims = [line for line in log.splitlines() if " claimed: attempt " in line]
    assert len(claims) == 3 and all(line.endswith("attempt 1") for line in claims), claims
    assert all(f"job {run.id}-" in line for line in claims), claims
    # Its output came back through the API, whole.
    stored = studio.home / "artifacts" / done.output_sha[:2] / done.output_sha
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == done.output_sha
