"""How foreign code (command and image steps) runs: contained, limited and unprivileged.

A command step runs

* with a minimal environment: ``PATH``, ``LANG``/``LC_ALL``, ``HOME`` and ``TMPDIR`` inside
  its own working directory, the file-contract variables and the step's declared ``env``;
  nothing of the server's environment (database URL, SMTP password, tokens) reaches it;
* in a fresh temporary working directory outside the server's data home (which stays
  private, mode 0700); the output is copied back, regular files only, and the directory
  removed;
* in its own session and process group, which is killed when the command ends, times out
  or is cancelled; it dies with the process that started it (``PR_SET_PDEATHSIG``);
* under resource limits: CPU time (from the step timeout), address space (from the step
  memory limit), file size, open files, processes (against fork bombs), no core files;
* as the unprivileged :attr:`Policy.user` (setting ``TINYMLAAS_SANDBOX_USER``, default
  ``nobody``) when the server runs as root. A server that does not run as root runs
  commands as its own user: then the limits and the environment still apply, but the
  command can read what that user can read, so run such a server as a dedicated user.

The policy of the step at hand comes from the worker (:func:`applied`); outside a worker
it comes from the settings. Linux only for the process parts (``prctl``).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pwd
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from tinymlaas.errors import StepFailedError

__all__ = [
    "CONTAINER_USER",
    "PATH",
    "Completed",
    "Identity",
    "Policy",
    "applied",
    "collect_output",
    "current_policy",
    "kill_descendants",
    "kill_group",
    "minimal_env",
    "public_message",
    "resource_limits",
    "run_contained",
    "sandbox_identity",
    "set_child_subreaper",
    "set_parent_death_signal",
    "working_dir",
]

PATH = "/usr/local/bin:/usr/bin:/bin"
#: The uid:gid containers of image steps run as (``nobody`` in most images).
CONTAINER_USER = 65534
_TAIL_BYTES = 20_000
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Policy:
    """The limits one step's foreign code runs under."""

    user: str = "nobody"
    timeout_s: float = 3600.0
    memory_mb: int = 8192
    #: ``time.monotonic()`` by which the whole step must end; None: ``timeout_s`` from now.
    deadline: float | None = None
    #: Where working directories are made (a private per-job directory); None: system temp.
    scratch: Path | None = None
    #: True in a dedicated step worker: every descendant of this process belongs to the step.
    contained: bool = False
    max_processes: int = 256
    max_open_files: int = 1024
    max_file_bytes: int = 4 * 2**30

    def remaining_s(self) -> float:
        if self.deadline is None:
            return self.timeout_s
        return max(0.0, self.deadline - time.monotonic())

    def with_deadline(self) -> Policy:
        return self if self.deadline is not None else \
            replace(self, deadline=time.monotonic() + self.timeout_s)


_policy: ContextVar[Policy | None] = ContextVar("tinymlaas_sandbox_policy", default=None)


def current_policy() -> Policy:
    """The policy the worker set for this step, else one from the settings."""
    policy = _policy.get()
    if policy is not None:
        return policy
    from tinymlaas.config import get_settings

    settings = get_settings()
    return Policy(user=settings.sandbox_user, timeout_s=settings.step_timeout_s,
                  memory_mb=settings.step_memory_mb)


@contextlib.contextmanager
def applied(policy: Policy) -> Iterator[Policy]:
    """Run the enclosed step under ``policy``."""
    token = _policy.set(policy)
    try:
        yield policy
    finally:
        _policy.reset(token)


# identity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The unprivileged user a command runs as."""

    name: str
    uid: int
    gid: int


def sandbox_identity(user: str) -> Identity | None:
    """``user`` resolved when this process is root (commands must drop root), else None: a
    server that is not root runs commands as itself."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StepFailedError(f"the sandbox user {user!r} does not exist on this machine; "
                              "create it or set TINYMLAAS_SANDBOX_USER to an unprivileged "
                              "user") from None
    return Identity(user, entry.pw_uid, entry.pw_gid)


# limits ----------------------------------------------------------------------------------


def _threads_of(uid: int) -> int:
    """Processes and threads of ``uid`` now: what ``RLIMIT_NPROC`` counts."""
    total = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info.get("uids"), proc.info.get("num_threads")
        if uids is not None and uids.real == uid:
            total += threads or 1
    return total


def resource_limits(policy: Policy, uid: int | None = None) -> dict[int, int]:
    """The rlimits of a command: CPU seconds from the time left (every core busy for all
    of it), address space twice the memory limit (virtual reservations exceed resident
    use; the executor watches resident memory), file size, open files, no core files, and
    ``max_processes`` more processes than ``uid`` (default: ours) has now."""
    cpus = os.cpu_count() or 1
    seconds = max(1, math.ceil(policy.remaining_s() * cpus))
    uid = os.getuid() if uid is None else uid
    return {
        resource.RLIMIT_CPU: seconds,
        resource.RLIMIT_AS: 2 * policy.memory_mb * 2**20,
        resource.RLIMIT_FSIZE: policy.max_file_bytes,
        resource.RLIMIT_NOFILE: policy.max_open_files,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: _threads_of(uid) + policy.max_processes,
    }


def _bounded(limits: Mapping[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """Each limit as ``(soft, hard)``, never above the current hard limit."""
    out = []
    for which, value in limits.items():
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        out.append((which, (value, value)))
    return out


# process control -------------------------------------------------------------------------

_prctl: Any = None


def _prctl_function() -> Any:
    """libc's ``prctl``, resolved before any fork (nothing is loaded in a forked child)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl


def _call_prctl(option: int, value: int) -> None:
    prctl = _prctl_function()
    if prctl is None:
        return
    if prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
             ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_parent_death_signal(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when the thread that forked it ends."""
    _call_prctl(_PR_SET_PDEATHSIG, int(sig))


def set_child_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it, not to init, so that
    double-forked and ``setsid`` daemons stay findable (and killable) as descendants."""
    _call_prctl(_PR_SET_CHILD_SUBREAPER, 1)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_descendants(pid: int | None = None, *, reap: bool = False, rounds: int = 100) -> None:
    """SIGKILL every descendant of ``pid`` (default: this process) and the process groups
    they lead, repeatedly, until none is left (a fork bomb keeps forking while it is
    killed). ``reap`` collects the zombies of this process's children afterwards (only
    when no ``Popen`` still waits for one)."""
    try:
        root = psutil.Process(pid or os.getpid())
    except psutil.Error:
        return
    own_group = os.getpgrp()
    for _ in range(rounds):
        try:
            alive = [p for p in root.children(recursive=True) if _alive(p)]
        except psutil.Error:
            break
        if not alive:
            break
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == proc.pid != own_group:
                    kill_group(proc.pid)
        time.sleep(0.005)
    if reap and (pid is None or pid == os.getpid()):
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def _preexec(limits: list[tuple[int, tuple[int, int]]], parent: int,
             prctl: Any) -> Callable[[], None]:
    """Runs in the forked child, after the uid and gid were dropped, before ``exec``."""

    def child() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(137)
        for which, value in limits:
            resource.setrlimit(which, value)

    return child


@dataclass
class Completed:
    """How a contained command ended, with the tails of its output."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def _read_into(fd: int, tail: bytearray) -> bool:
    """Read what is there; False at end of file."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not data:
        return False
    tail += data
    del tail[:-_TAIL_BYTES]
    return True


def run_contained(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                  identity: Identity | None, limits: Mapping[int, int] | None,
                  timeout_s: float, contained: bool = False) -> Completed:
    """Run ``argv`` in its own session as ``identity`` under ``limits``, at most
    ``timeout_s``; its whole group (and, when ``contained``, every descendant of this
    process) is killed when it ends. Raises OSError when it cannot start."""
    prctl = _prctl_function()
    drop: dict[str, Any] = {}
    if identity is not None:
        drop = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, close_fds=True, umask=0o077,
        preexec_fn=_preexec(_bounded(limits or {}), os.getpid(), prctl), **drop)
    assert proc.stdout is not None and proc.stderr is not None
    tails = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + max(0.0, timeout_s)
    timed_out = False
    try:
        with selectors.DefaultSelector() as selector:
            for fd in tails:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not selector.get_map():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(min(left, 0.2))
                    continue
                for key, _ in selector.select(min(left, 0.2)):
                    fd = int(key.fd)
                    if not _read_into(fd, tails[fd]):
                        selector.unregister(fd)
            # the command ended or ran out of time: end everything it left behind
            kill_group(proc.pid)
            proc.wait()
            if contained:
                kill_descendants(reap=True)
            _drain(selector, tails, time.monotonic() + 0.5)
    finally:
        if proc.returncode is None:
            kill_group(proc.pid)
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    out, err = (bytes(t).decode("utf-8", "replace") for t in tails.values())
    return Completed(proc.returncode, out, err, timed_out)


def _drain(selector: selectors.BaseSelector, tails: dict[int, bytearray],
           until: float) -> None:
    """Read what the ended command left in its pipes (briefly: a process that escaped the
    group may hold them open)."""
    while selector.get_map() and time.monotonic() < until:
        for key, _ in selector.select(max(0.0, min(0.05, until - time.monotonic()))):
            fd = int(key.fd)
            if not _read_into(fd, tails[fd]):
                selector.unregister(fd)


# working directories and files -----------------------------------------------------------


def working_dir(policy: Policy, owner: Identity | None) -> Path:
    """A fresh private directory holding ``home/`` and ``tmp/``, owned by ``owner``."""
    base = policy.scratch if policy.scratch is not None and policy.scratch.is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="step-", dir=base))
    for sub in ("home", "tmp"):
        (root / sub).mkdir()
    if owner is not None:
        give_to(root, owner.uid, owner.gid)
    return root


def give_to(path: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following links."""
    os.chown(path, uid, gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for base, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(base, name), uid, gid, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    """Remove a working directory whatever modes the step left in it."""

    def retry(func: Callable[..., Any], name: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700, follow_symlinks=False)
        with contextlib.suppress(OSError):
            func(name)

    shutil.rmtree(path, onerror=retry)


def collect_output(src: Path, dst: Path, owner: Identity | None) -> None:
    """Copy what the step wrote to ``src`` into ``dst``: regular files and directories only
    (a symlink or device could point the server at its own files), and, when the step ran
    as ``owner``, only files that user owns (no hard links to anyone else's files)."""
    dst.mkdir(parents=True, exist_ok=True)
    for base, dirs, files in os.walk(src):
        rel = os.path.relpath(base, src)
        target = dst if rel == "." else dst / rel
        for name in dirs:
            info = os.lstat(os.path.join(base, name))
            if not stat.S_ISDIR(info.st_mode):
                raise StepFailedError(_not_plain(os.path.join(rel, name)))
            (target / name).mkdir()
        for name in files:
            _copy_file(os.path.join(base, name), target / name,
                       os.path.normpath(os.path.join(rel, name)), owner)


def _not_plain(rel: str) -> str:
    return (f"the external step's output may hold only regular files and directories; "
            f"{os.path.normpath(rel)} is neither")


def _copy_file(path: str, target: Path, rel: str, owner: Identity | None) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise StepFailedError(_not_plain(rel)) from None
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StepFailedError(_not_plain(rel))
        if owner is not None and info.st_uid != owner.uid:
            raise StepFailedError(f"the external step's output {rel} was not written by the "
                                  "step (a link to another file?)")
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def minimal_env(workdir: Path, declared: Mapping[str, str],
                contract: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a command: nothing inherited from the server."""
    return {"PATH": PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": str(workdir / "home"), "TMPDIR": str(workdir / "tmp"),
            **declared, **contract}


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s'\"/:,;()\[\]{}<>]+/)+"
                            r"([^\s'\"/:,;()\[\]{}<>]*)")


def public_message(text: str) -> str:
    """``text`` with absolute paths cut to their last part (no server layout in messages
    users see)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)
