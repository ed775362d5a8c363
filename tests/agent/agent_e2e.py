"""The real Studio for the agent's end-to-end tests: ``tinymlaas serve`` in a subprocess on
a free port, a user with a token, a run ending in package-python, and helpers to enroll a
device, release and roll out, and run ``tinymlaas agent`` as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
          fault: str | None = None, via_main: bool = False) -> subprocess.CompletedProcess:
    """``tinymlaas agent --once --json`` as a real process (``via_main``: through the
    ``tinymlaas`` command, else through the agent's own module, which starts faster)."""
    env = {k: v for k, v in os.environ.items() if k != "TINYMLAAS_AGENT_FAULT"}
    if fault:
        env["TINYMLAAS_AGENT_FAULT"] = fault
    command = ["tinymlaas.cli.main", "agent"] if via_main else ["tinymlaas.agent.cli"]
    argv = [sys.executable, "-m", *command, "--root", str(root), "--once", "--json"]
    if server:
        argv += ["--server", server]
    if code:
        argv += ["--token", code]
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
