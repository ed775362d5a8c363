"""The real Studio for the agent's end-to-end tests: ``tinymlaas serve`` in a subprocess on
a free port, a user with a token, a run ending in package-python, and helpers to enroll a
device, release and roll out, and run ``tinymlaas agent`` as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx

from tinymlaas.agent.store import Layout, load_state
from tinymlaas.client import Client

PASSWORD = "correct horse battery staple"


@dataclass
class Studio:
    url: str
    home: Path
    client: Client
    project: str
    run_id: str
    model: Path

    def blob(self, sha256: str) -> Path:
        """A blob of the server's artifact store, on its disk."""
        found = [p for p in (self.home).rglob(sha256) if p.is_file()]
        assert len(found) == 1, f"blob {sha256[:12]} not found under {self.home}"
        return found[0]

    def release_key_file(self) -> Path:
        found = list((self.home / "keys" / self.project).glob("release-key.pem"))
        assert len(found) == 1
        return found[0]


def make_run(client: Client, model: Path) -> str:
    uploaded = client.upload_model(model, name=model.stem)
    run = client.create_run(uploaded.id, pipeline={"steps": ["package-python"],
                                                   "evaluate": False})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = client.get_run(run.id)
        if run.status.value in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert run.status.value == "succeeded", run.error
    return run.id


def enroll(studio: Studio, name: str, group: str, profile: str | None = None) -> tuple[str, str]:
    """A new device of ``group``: its id and one-time enrollment code."""
    device = studio.client.enroll_device(name, groups=[group], profile=profile)
    return device.id, device.enrollment_code


def agent(root: Path, *, server: str | None = None, code: str | None = None,
          fault: str | None = None, via_main: bool = False, gateway: str | None = None,
          health_timeout: float | None = None) -> subprocess.CompletedProcess:
    """``tinymlaas agent --once --json`` as a real process (``via_main``: through the
    ``tinymlaas`` command, else through the agent's own module, which starts faster;
    ``gateway``: the MCU's address for ``--gateway``)."""
    env = {k: v for k, v in os.environ.items() if k != "TINYMLAAS_AGENT_FAULT"}
    if fault:
        env["TINYMLAAS_AGENT_FAULT"] = fault
    command = ["tinymlaas.cli.main", "agent"] if via_main else ["tinymlaas.agent.cli"]
    argv = [sys.executable, "-m", *command, "--root", str(root), "--once", "--json"]
    if server:
        argv += ["--server", server]
    if code:
        argv += ["--token", code]
    if gateway:
        argv += ["--gateway", gateway]
    if health_timeout is not None:
        argv += ["--health-timeout", str(health_timeout)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def summary(done: subprocess.CompletedProcess) -> dict:
    assert done.stdout.strip(), f"no summary; exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def current_release(root: Path) -> tuple[int | None, str | None]:
    """The committed version and the slot ``current`` points to, after checking that the
    slot's files hash as that release's signed manifest says."""
    layout = Layout(root)
    state = load_state(layout)
    if not layout.current.is_symlink():
        assert state.committed is None
        return None, None
    slot = os.readlink(layout.current)
    assert state.committed is not None and slot == f"slots/{state.committed.slot}"
    folder = root / slot
    manifest = json.loads((folder / "manifest.json").read_bytes())["signed"]
    assert manifest["version"] == state.committed.version
    for release_file in manifest["files"]:
        data = (folder / "release" / release_file["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == release_file["sha256"], release_file["name"]
    package = folder / "release" / manifest["package"]["name"]
    assert hashlib.sha256(package.read_bytes()).hexdigest() == state.committed.package_sha256
    return state.committed.version, state.committed.slot


#: Crash points before ``current`` is switched: the update resumes and commits.
BEFORE_SWITCH = {"mid-download", "after-download"}
#: The points of test_agent_faults.py and test_agent_faults_trial.py (split for time).
UPDATE_POINTS = ["mid-download", "after-download", "before-replace"]
TRIAL_POINTS = ["after-replace", "after-switch", "health"]


def crash_and_recover(studio: Studio, tmp_path: Path, point: str) -> None:
    """Commit a first release, crash (SIGKILL at ``point``) during the second, start again:
    the device ends on a complete committed slot and the server shows the truth."""
    group = f"faults-{point}"
    device, code = enroll(studio, f"crash-{point}", group)
    root = tmp_path / "agent"
    first = studio.client.create_release(studio.run_id)
    studio.client.deploy(group, release=first.id)
    assert summary(agent(root, server=studio.url, code=code))["outcome"] == "committed"
    assert current_release(root) == (first.version, "a")

    second = studio.client.create_release(studio.run_id)
    rollout = studio.client.deploy(group, release=second.id)
    crashed = agent(root, fault=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = load_state(Layout(root))
    assert state.committed is not None and state.committed.version == first.version
    if point == "mid-download":  # a part of the package is on disk, to be resumed
        (part,) = (root / "downloads").glob("*/*.part")
        assert 0 < part.stat().st_size < second.manifest["signed"]["package"]["size"]
    if point in BEFORE_SWITCH:
        assert state.trial is None and current_release(root) == (first.version, "a")

    done = agent(root)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    action = next(a for a in studio.client.rollout(rollout.id).actions if a.device_id == device)
    shown = studio.client.fleet_device(device)
    if point in BEFORE_SWITCH:
        assert result["outcome"] == "committed", result
        assert current_release(root) == (second.version, "b")
        assert action.state.value == "succeeded"
        assert (shown.version, shown.release_id) == (second.version, second.id)
    else:
        assert result["outcome"] == "rolled_back", result
        assert current_release(root) == (first.version, "a")
        assert (action.state.value, action.stage) == ("rolled_back", "rolled_back")
        assert "rolled back to version" in action.message
        assert (shown.version, shown.release_id) == (first.version, first.id)
    state = load_state(Layout(root))
    assert state.trial is None and state.pending == {}
    assert not (root / "current.new").is_symlink()
    assert not list((root / "slots").glob("*.partial"))


class Proxy(BaseHTTPRequestHandler):
    """An HTTP proxy in front of the Studio that records each request's path, Range header
    and status, and, when ``ticket`` is set, serves it as every ``ticket.json`` (rewriting
    the deployment's unsigned metadata to match)."""

    upstream = ""
    ticket = b""
    seen: ClassVar[list[tuple[str, str, int]]] = []

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "content-type", "range")}
        if method == "GET" and self.ticket and self.path.endswith("/ticket.json"):
            status, data, extra = 200, self.ticket, {}
        else:
            answer = httpx.request(method, self.upstream + self.path, headers=headers,
                                   content=body)
            status, data = answer.status_code, answer.content
            extra = {k: v for k, v in answer.headers.items() if k.lower() == "content-range"}
            if self.ticket and method == "GET" and "/deploymentBase/" in self.path \
                    and status == 200:
                document = json.loads(data)
                for artifact in document["deployment"]["chunks"][0]["artifacts"]:
                    if artifact["filename"] == "ticket.json":
                        artifact["hashes"] = {"sha256": hashlib.sha256(self.ticket).hexdigest()}
                        artifact["size"] = len(self.ticket)
                data = json.dumps(document).encode()
        self.seen.append((self.path, self.headers.get("Range", ""), status))
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def proxy(upstream: str) -> Iterator[tuple[str, type[Proxy]]]:
    """A :class:`Proxy` of ``upstream`` on a free port, in a thread: its URL and class."""
    handler = type("StudioProxy", (Proxy,), {"upstream": upstream, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
