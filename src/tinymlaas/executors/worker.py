"""What runs inside a worker process: one job, read as JSON, answered as JSON.

Job fields: ``kind`` (``transform`` or ``evaluate``), ``job_dir`` (logs, progress and
result live there), ``input`` ``{path, kind}``, ``input_specs``, ``dataset``
``{path, task, splits, num_classes}`` or null, and for transforms ``transformer`` and
``params``; for evaluations ``task``, ``reference`` (an .npy of the original's outputs) and
``device`` (a device profile for the fit verdict) or null.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from tinymlaas.domain import ArtifactKind, DatasetSplits, Device, Task, TensorSpec
from tinymlaas.errors import TinymlaasError

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
        report_progress=_progress_writer(job_dir))
    output = transformer.run(ctx)
    return {"output": {"path": str(output.path), "kind": output.kind.value},
            "metrics": output.metrics}


def _evaluate(job: dict[str, Any], job_dir: Path, log: logging.Logger) -> dict[str, Any]:
    import numpy as np

    from tinymlaas.evaluation.evaluate import evaluate_model

    dataset = _dataset(job["dataset"])
    assert dataset is not None
    X, y = dataset.split("test")
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


def run_job(job_json: str) -> None:
    """Run one job; always leaves ``result.json`` in the job directory unless killed."""
    if sys.path != _warm_sys_path:
        from tinymlaas.transformers.registry import reset

        reset()
    job = json.loads(job_json)
    job_dir = Path(job["job_dir"])
    _capture_output(job_dir / "step.log")
    log = _logger(job_dir)
    try:
        body = (_transform if job["kind"] == "transform" else _evaluate)(job, job_dir, log)
        result = {"ok": True, "error": None, "error_type": None, **body}
    except TinymlaasError as exc:
        log.error("%s", exc.message)
        result = {"ok": False, "output": None, "metrics": {}, "error": exc.message,
                  "error_type": type(exc).__name__}
    except Exception as exc:  # any library failure becomes the step's stated cause
        log.error("%s", traceback.format_exc())
        text = str(exc).strip().splitlines()
        result = {"ok": False, "output": None, "metrics": {},
                  "error": f"{type(exc).__name__}: {text[0][:500] if text else ''}",
                  "error_type": type(exc).__name__}
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job_dir / "result.json")
