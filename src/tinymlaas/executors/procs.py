"""Records of the processes each running step owns, so that nothing outlives its server.

While a step runs, its executor keeps a small JSON record in ``<home>/procs/``: the owner
(the executor's process: pid, start time, host), the step's processes (pid and start time:
the worker and every descendant seen), the process groups they lead, and the step's
scratch directory (in the system's temporary directory, naming its owner too). The record
goes when the step ends. A server killed with ``kill -9`` cannot remove its records; its
workers and commands die with it (parent-death signals), and the next start
(:meth:`ProcessBook.sweep`) kills whatever a record names whose owner is gone, a dead pid or
one reused by a newer process, and removes the scratch directory, as it does any scratch
directory of a dead owner. A record whose owner is alive (a CLI run beside a server shares
the home) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from tinymlaas.transformers.sandbox import kill_descendants, kill_group, remove_tree

__all__ = ["ProcessBook", "kill_recorded", "new_scratch_dir", "private_dir", "process_start",
           "process_tag", "same_process", "sweep_scratch_dirs"]

log = logging.getLogger("tinymlaas.steps")
SCRATCH_PREFIX = "tinymlaas-job-"
OWNER_FILE = ".owner"
_MAX_PROCS = 2000
_PROC_STAT = Path("/proc/self/stat").is_file()
_CLK_TCK = os.sysconf("SC_CLK_TCK") if _PROC_STAT else 100
#: How far an epoch start time may have moved with the boot time's estimate.
_EPOCH_SLACK_S = 5.0


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700), or tighten it to 0700 when it exists and is ours: the
    server's data must stay out of reach of the unprivileged user foreign code runs as."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def process_start(pid: int) -> float | None:
    """When process ``pid`` started, or None when there is none.

    On Linux: seconds since boot, from the kernel's own count of clock ticks. The epoch
    time psutil derives from it adds the boot time, which the kernel re-estimates as the
    wall clock is adjusted (it moved by a second within minutes on a virtual machine), and
    then every live process looked like a reused pid. Elsewhere: seconds since the epoch.
    """
    if _PROC_STAT:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            # starttime is field 22; fields 3 on follow the command name's closing ')'.
            return int(stat[stat.rindex(b")") + 2:].split()[19]) / _CLK_TCK
        except (OSError, ValueError, IndexError):
            return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_tag(pid: int) -> int | None:
    """:func:`process_start` as a whole number (hundredths of a second): with the pid, it
    names one process for as long as the machine runs."""
    start = process_start(pid)
    return None if start is None else round(start * 100)


def same_process(pid: int, start: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (not a reused pid)."""
    now = process_start(pid)
    return now is not None and start is not None and abs(now - start) < 0.5 / _CLK_TCK


def _owner() -> dict[str, Any]:
    """This process as the owner of records and scratch directories: ``started`` is
    :func:`process_start`; ``start``, psutil's epoch time, is what earlier versions of the
    product (sharing the system's temporary directory) compare."""
    pid = os.getpid()
    epoch: float | None = None
    with contextlib.suppress(psutil.Error):
        epoch = psutil.Process(pid).create_time()
    return {"pid": pid, "started": process_start(pid), "start": epoch,
            "host": socket.gethostname()}


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the recorded owner still runs (on another host: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner["pid"])
    if "started" in owner:
        return same_process(pid, owner["started"])
    try:  # an earlier version's owner: its epoch start time, give or take the boot time's moves
        return abs(psutil.Process(pid).create_time() - float(owner["start"])) < _EPOCH_SLACK_S
    except (psutil.Error, TypeError, ValueError):
        return False


def new_scratch_dir() -> Path:
    """A private directory for one job's working directories, outside the data home: only
    its owner lists it, others may pass through it (to their own step directory). It names
    its owner, so that any later start can remove it if the owner died (whatever its home)."""
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    path.chmod(0o711)
    fd = os.open(path / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(_owner(), fh)
    return path


def sweep_scratch_dirs() -> int:
    """Remove the scratch directories (ours) of executors that died; returns how many."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            if path.is_symlink() or path.stat().st_uid != os.geteuid():
                continue
            owner = json.loads((path / OWNER_FILE).read_text())
            if _owner_alive(owner):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or not finished being made
        remove_scratch_dir(path)
        removed += 1
    return removed


def remove_scratch_dir(path: str | Path | None) -> None:
    if not path:
        return
    path = Path(path)
    if path.name.startswith(SCRATCH_PREFIX) and path.is_dir() and not path.is_symlink():
        remove_tree(path)


def kill_recorded(record: dict[str, Any]) -> None:
    """SIGKILL what ``record`` names that still is what it names: each recorded process
    (with its descendants), and each group it led unless the leader's pid was reused."""
    procs = [(int(pid), start) for pid, start in record.get("procs", [])]
    for pid, start in procs:
        if same_process(pid, start):
            kill_descendants(pid)
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    for pgid, start in record.get("groups", []):
        leader = process_start(int(pgid))
        if leader is None or same_process(int(pgid), start):
            kill_group(int(pgid))


class ProcessBook:
    """The records of one data home's running steps (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = private_dir(Path(state_dir))

    def _write(self, name: str, record: dict[str, Any]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.dir / name)

    def open(self, job_id: str, scratch: Path | None) -> dict[str, Any]:
        """A new record for a job about to start."""
        name = f"{uuid.uuid4().hex}.json"
        record: dict[str, Any] = {"name": name, "job_id": job_id, "owner": _owner(),
                                  "scratch": str(scratch) if scratch else None, "procs": [],
                                  "groups": []}
        self._write(name, record)
        return record

    def add(self, record: dict[str, Any], procs: Iterable[psutil.Process]) -> None:
        """Add the processes (and the groups they lead) not recorded yet."""
        known = {pid for pid, _ in record["procs"]}
        groups = {pgid for pgid, _ in record["groups"]}
        changed = False
        for proc in procs:
            if proc.pid in known:
                continue
            try:
                start = process_start(proc.pid)
                leads = os.getpgid(proc.pid) == proc.pid
            except OSError:
                continue
            if start is None:
                continue
            record["procs"].append([proc.pid, start])
            known.add(proc.pid)
            if leads and proc.pid not in groups and proc.pid != os.getpgrp():
                record["groups"].append([proc.pid, start])
            changed = True
        if changed:
            del record["procs"][:-_MAX_PROCS]
            self._write(record["name"], record)

    def close(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / record["name"]).unlink()

    def sweep(self) -> list[str]:
        """Kill the leftovers of steps whose owner is gone; returns their job ids."""
        swept: list[str] = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                owner = record["owner"]
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("removing unreadable process record %s", path.name)
                path.unlink(missing_ok=True)
                continue
            if _owner_alive(owner):
                continue
            try:
                kill_recorded(record)
                remove_scratch_dir(record.get("scratch"))
            except Exception:  # a broken record must not stop the server from starting
                log.exception("could not clean up after step %s", record.get("job_id"))
            path.unlink(missing_ok=True)
            swept.append(str(record.get("job_id")))
        sweep_scratch_dirs()
        if swept:
            log.warning("stopped the leftover processes of %d step(s) of a server that "
                        "died: %s", len(swept), ", ".join(swept))
        return swept
