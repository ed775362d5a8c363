"""Recovery on start, with the server out of reach: whatever state a crash left, the
agent's first act is to put ``current`` back on a complete committed slot and to keep
the truth (a rolled-back trial) to report as soon as the server answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_support import enrolled_root, make_release
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlaas.agent.slots import current_slot, install_slot, point_current
from tinymlaas.agent.store import AgentState, Installed, Layout, Trial, load_state, save_state
from tinymlaas.agent.verify import VerifiedRelease
from tinymlaas.api.testing import free_port


def _slot(layout: Layout, key: Ed25519PrivateKey, package: tuple[Path, Path], slot: str,
          version: int) -> Installed:
    release = make_release(key, *package, version=version, action_id=f"act-{version}")
    verified = VerifiedRelease(release.document, None, release.manifest)  # type: ignore[arg-type]
    name = install_slot(layout, slot, verified, release.files)
    return Installed(slot=slot, version=version, release_id=f"rel-{version}",
                     action_id=f"act-{version}", kind="python-wheel",
                     package=release.document.package.name,
                     package_sha256=release.document.package.sha256, import_name=name)


def _run_agent(layout: Layout) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymlaas.agent.cli", "--root",
                           str(layout.root), "--once", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("phase", ["switching", "switched"])
def test_agent_rolls_back_an_uncommitted_trial_before_anything_else(
        tmp_path: Path, release_key: Ed25519PrivateKey, package: tuple[Path, Path],
        phase: str) -> None:
    layout = enrolled_root(tmp_path / "root", release_key, f"http://127.0.0.1:{free_port()}")
    committed = _slot(layout, release_key, package, "a", 1)
    trial = _slot(layout, release_key, package, "b", 2)
    point_current(layout, "b")
    layout.current_new.symlink_to("slots/b")  # a switch interrupted before os.replace
    save_state(layout, AgentState(committed=committed, floor_version=1,
                                  trial=Trial(**trial.model_dump(), phase=phase)))
    done = _run_agent(layout)
    assert done.returncode == 7, done.stderr  # the server is out of reach
    assert "cannot reach" in done.stderr
    assert current_slot(layout) == "a" and os.readlink(layout.current) == "slots/a"
    assert not layout.current_new.is_symlink() and not layout.slot("b").exists()
    state = load_state(layout)
    assert state.trial is None and state.committed == committed and state.floor_version == 1
    report = state.pending["act-2"]["status"]
    assert (report["execution"], report["result"]["finished"]) == ("closed", "failure")
    assert report["tinymlaas"] == {"stage": "rolled_back", "version": 1, "slot": "a"}
    assert "rolled back to version 1" in report["details"][0]


def test_agent_discards_a_half_written_slot_and_repairs_current(
        tmp_path: Path, release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    layout = enrolled_root(tmp_path / "root", release_key, f"http://127.0.0.1:{free_port()}")
    committed = _slot(layout, release_key, package, "b", 4)
    (layout.slots / "a.partial" / "content").mkdir(parents=True)
    (layout.slots / "a.partial" / "content" / "half.bin").write_bytes(b"\0" * 100)
    point_current(layout, "a")  # pointing to a slot that is not the committed one
    save_state(layout, AgentState(committed=committed, floor_version=4, trial=Trial(
        slot="a", version=5, release_id="rel-5", action_id="act-5", kind="python-wheel",
        package="x.whl", package_sha256="0" * 64, phase="installing")))
    done = _run_agent(layout)
    assert done.returncode == 7, done.stderr
    assert current_slot(layout) == "b"
    assert not (layout.slots / "a.partial").exists() and not layout.slot("a").exists()
    state = load_state(layout)
    assert state.trial is None and state.pending == {}  # the action is still open: retried
    assert json.loads(layout.config.read_text())["controller_id"] == "dev-1"
    assert (layout.config.stat().st_mode & 0o777) == 0o600


def test_agent_removes_current_when_the_first_trial_did_not_commit(
        tmp_path: Path, release_key: Ed25519PrivateKey, package: tuple[Path, Path]) -> None:
    layout = enrolled_root(tmp_path / "root", release_key, f"http://127.0.0.1:{free_port()}")
    trial = _slot(layout, release_key, package, "a", 1)
    point_current(layout, "a")
    save_state(layout, AgentState(trial=Trial(**trial.model_dump(), phase="switched")))
    done = _run_agent(layout)
    assert done.returncode == 7, done.stderr
    assert not layout.current.is_symlink() and not layout.slot("a").exists()
    report = load_state(layout).pending["act-1"]["status"]
    assert report["tinymlaas"]["stage"] == "rolled_back"
    assert "no release" in report["details"][0]


def test_agent_without_enrollment_asks_for_the_code(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tinymlaas.agent.cli", "--root",
                           str(tmp_path / "root"), "--once"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "give --server and --token" in done.stderr


def test_agent_keeps_polling_while_the_server_is_out_of_reach(
        tmp_path: Path, release_key: Ed25519PrivateKey) -> None:
    layout = enrolled_root(tmp_path / "root", release_key, f"http://127.0.0.1:{free_port()}")
    process = subprocess.Popen([sys.executable, "-m", "tinymlaas.agent.cli", "--root",
                                str(layout.root)], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while len(lines) < 2:  # the poll interval of agent.json is 1 s
            line = process.stderr.readline()
            assert line, f"the agent stopped: exit {process.wait()}, {lines}"
            if "trying again in 1 s" in line:
                lines.append(line)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
