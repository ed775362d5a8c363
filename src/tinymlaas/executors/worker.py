"""What runs inside a worker process: one job, read as JSON, answered as JSON.

Job fields: ``kind`` (``transform`` or ``evaluate``), ``job_dir`` (logs, progress and
result live there), ``input`` ``{path, kind}``, ``input_specs``, ``dataset``
``{path, task, splits, num_classes}`` or null, and for transforms ``transformer`` and
``params``; for evaluations ``task``, ``reference`` (an .npy of the original's outputs) and
``device`` (a device profile for the fit verdict) or null. The executor adds the effective
``timeout_s`` and ``memory_mb``, ``owner_pid`` (its own pid) and ``sandbox`` (``user``,
``timeout_s``, ``memory_mb``, ``scratch``: the policy of command steps, see
:mod:`tinymlaas.transformers.sandbox`).

A worker is contained: it is a child subreaper (nothing a step starts escapes its tree), it
dies with its parent, the fork server, killing its descendants first, and it kills them
when the job ends. An unexpected exception shows in the step log and error as one line with
a short reference; the traceback goes only into the result's ``traceback``, which the
executor logs to the server log and drops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from tinymlaas.domain import ArtifactKind, DatasetSplits, Device, Task, TensorSpec
from tinymlaas.errors import TinymlaasError
from tinymlaas.transformers import sandbox

__all__ = ["run_job"]


_warm_sys_path: list[str] = []


def _warm_registry() -> None:
    """Scan entry points once in the fork server, so forked workers inherit the table.

    A worker's ``sys.path`` is the parent's, which may differ from the fork server's (plug-in
    paths added at run time); ``run_job`` rescans then.
    """
    from tinymlaas.transformers.registry import known_names

    _warm_sys_path[:] = sys.path
    # A duplicate plug-in name is reported by the step that needs the table, not here.
    with contextlib.suppress(TinymlaasError):
        known_names()


_warm_registry()


def _progress_writer(job_dir: Path):
    path = job_dir / "progress.jsonl"

    def report(fraction: float, message: str) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps({"progress": round(fraction, 4), "message": message}) + "\n")

    return report


def _capture_output(path: Path) -> None:
    """Send everything libraries print (to fds 1 and 2) into the step log, not the caller's
    terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _logger(job_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"tinymlaas.step.{os.getpid()}")
    logger.handlers.clear()
    handler = logging.FileHandler(job_dir / "step.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _dataset(spec: dict[str, Any] | None):
    from tinymlaas.transformers.base import DatasetAccess

    if not spec:
        return None
    return DatasetAccess(path=Path(spec["path"]), task=Task(spec["task"]),
                         splits=DatasetSplits(**spec["splits"]),
                         num_classes=spec.get("num_classes"))


def _transform(job: dict[str, Any], job_dir: Path, log: logging.Logger) -> dict[str, Any]:
    from tinymlaas.transformers.base import StepContext
    from tinymlaas.transformers.registry import get_transformer, validate_params

    transformer = get_transformer(job["transformer"])
    out_dir, work_dir = job_dir / "out", job_dir / "work"
    out_dir.mkdir(exist_ok=True)
    work_dir.mkdir(exist_ok=True)
    ctx = StepContext(
        input_path=Path(job["input"]["path"]), input_kind=ArtifactKind(job["input"]["kind"]),
        params=validate_params(job["transformer"], job.get("params", {})),
        out_dir=out_dir, work_dir=work_dir,
        input_specs=[TensorSpec(**s) for s in job.get("input_specs", [])],
        dataset=_dataset(job.get("dataset")), log=log,
        device=Device(**job["device"]) if job.get("device") else None,
        key_dir=Path(job["key_dir"]) if job.get("key_dir") else None,
        report_progress=_progress_writer(job_dir))
    output = transformer.run(ctx)
    return {"output": {"path": str(output.path), "kind": output.kind.value},
            "metrics": output.metrics}


def _evaluate(job: dict[str, Any], job_dir: Path, log: logging.Logger) -> dict[str, Any]:
    import numpy as np

    from tinymlaas.evaluation.evaluate import evaluate_model

    dataset = _dataset(job["dataset"])
    assert dataset is not None
    X, y = dataset.split(job.get("split", "test"))
    reference = np.load(job["reference"], allow_pickle=False) if job.get("reference") else None
    metrics, outputs = evaluate_model(
        Path(job["input"]["path"]), ArtifactKind(job["input"]["kind"]), Task(job["task"]),
        X, y, inputs=[TensorSpec(**s) for s in job.get("input_specs", [])],
        reference=reference, progress=_progress_writer(job_dir),
        device=Device(**job["device"]) if job.get("device") else None)
    out = job_dir / "outputs.npy"
    np.save(out, outputs)
    log.info("metrics: %s", json.dumps(metrics))
    return {"output": {"path": str(out), "kind": ArtifactKind.outputs_npy.value},
            "metrics": metrics}


def _die_with_descendants(signum: int, frame: object) -> None:
    """The parent died (or we were told to stop): take everything we started along."""
    with contextlib.suppress(Exception):
        sandbox.kill_descendants()
    os.kill(os.getpid(), signal.SIGKILL)


def _contain(owner_pid: int) -> None:
    """Make this worker a subreaper that dies, with its descendants, when its parent does."""
    signal.signal(signal.SIGTERM, _die_with_descendants)
    # multiprocessing hands each child the write end of the pipe whose end of file tells the
    # fork server that the executor is gone; held here, it would keep the fork server (and
    # so this worker) alive after a ``kill -9`` of the executor. A nested fork server, if a
    # step wants one, is started afresh.
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    sandbox.set_child_subreaper()
    sandbox.set_parent_death_signal(signal.SIGTERM)
    with contextlib.suppress(Exception):
        import psutil

        if not psutil.pid_exists(owner_pid):  # the executor died before the signal was armed
            _die_with_descendants(signal.SIGTERM, None)


def _short_warning(message: Warning | str, category: type[Warning], filename: str,
                   lineno: int, line: str | None = None) -> str:
    """Warnings in the step log without the server's source paths."""
    return f"{category.__name__}: {sandbox.public_message(str(message))}\n"


def _policy(job: dict[str, Any], started: float) -> sandbox.Policy:
    spec = job.get("sandbox") or {}
    timeout_s = float(spec.get("timeout_s") or job.get("timeout_s") or 3600.0)
    return sandbox.Policy(
        user=spec.get("user") or "nobody", timeout_s=timeout_s,
        memory_mb=int(spec.get("memory_mb") or job.get("memory_mb") or 8192),
        deadline=started + timeout_s,
        scratch=Path(spec["scratch"]) if spec.get("scratch") else None,
        contained=job.get("owner_pid") is not None)


def _unexpected(exc: Exception, log: logging.Logger) -> dict[str, Any]:
    """The step's result for a failure nobody planned for: one line for the user (no
    traceback, no server paths), the traceback for the server log."""
    ref = secrets.token_hex(4)
    kind = type(exc).__name__
    text = str(exc).strip().splitlines()
    first = sandbox.public_message(text[0][:500]) if text else ""
    log.error("error %s: %s: %s", ref, kind, first)
    return {"ok": False, "output": None, "metrics": {},
            "error": f"{kind}: {first} (reference {ref}; the details are in the server log)",
            "error_type": kind, "ref": ref, "traceback": traceback.format_exc()}


def run_job(job_json: str) -> None:
    """Run one job; always leaves ``result.json`` in the job directory unless killed."""
    started = time.monotonic()
    job = json.loads(job_json)
    if job.get("owner_pid") is not None:
        _contain(int(job["owner_pid"]))
    if sys.path != _warm_sys_path:
        from tinymlaas.transformers.registry import reset

        reset()
    job_dir = Path(job["job_dir"])
    _capture_output(job_dir / "step.log")
    warnings.formatwarning = _short_warning
    log = _logger(job_dir)
    try:
        with sandbox.applied(_policy(job, started)):
            body = (_transform if job["kind"] == "transform" else _evaluate)(job, job_dir, log)
        result = {"ok": True, "error": None, "error_type": None, **body}
    except TinymlaasError as exc:
        log.error("%s", exc.message)
        result = {"ok": False, "output": None, "metrics": {}, "error": exc.message,
                  "error_type": type(exc).__name__}
    except Exception as exc:  # any library failure becomes the step's stated cause
        result = _unexpected(exc, log)
    finally:
        if job.get("owner_pid") is not None:
            sandbox.kill_descendants(reap=True)
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job_dir / "result.json")
