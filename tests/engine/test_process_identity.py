"""A process is named by its pid and start time: the start time must not move while the
process lives. psutil's epoch start time adds the kernel's estimate of the boot time, which
moves when the wall clock is adjusted (by a second within minutes on a virtual machine);
every live process then looked like a reused pid, and a starting executor removed live
steps' scratch directories and a live search looked interrupted."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from tinymlaas.engine.engine import lease_owner
from tinymlaas.executors.procs import process_start, process_tag, same_process
from tinymlaas.service.searches import _alive


def _move_boot_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's view after the kernel re-estimated the boot time one second later."""
    boot, create = psutil.boot_time(), psutil.Process.create_time
    monkeypatch.setattr(psutil, "boot_time", lambda: boot + 1.0)
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: create(self) + 1.0)


def test_a_live_process_keeps_its_identity_when_the_boot_time_moves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start(child.pid)
        owner = lease_owner()
        assert start is not None
        assert owner.endswith(f":{os.getpid()}:{process_tag(os.getpid())}")
        _move_boot_time(monkeypatch)
        assert same_process(child.pid, start)
        assert _alive(owner)
    finally:
        child.kill()
        child.wait()
    assert process_start(child.pid) is None and not same_process(child.pid, start)


def test_another_process_with_the_same_pid_is_not_the_same() -> None:
    start = process_start(os.getpid())
    assert start is not None
    assert not same_process(os.getpid(), start - 0.01)  # one clock tick earlier
    host, pid, tag = lease_owner().rsplit(":", 2)
    assert not _alive(f"{host}:{pid}:{int(tag) - 1}")
