"""Local executor: each job in its own process, forked from a warm fork server.

The fork server imports the heavy libraries once, so a step starts in milliseconds, while
a crash, a hang or runaway memory still only takes its own process down. The parent
watches every job for its wall-clock timeout and resident-memory limit (the process and
its children) and kills it when either is crossed.

Nothing a step starts outlives it: the worker is a child subreaper (double-forked and
``setsid`` descendants stay its descendants), and a cancel, a timeout or the end of the
job kills every descendant and the groups they lead. Processes die with their parent: the
fork server exits when this process does, a worker dies with the fork server, a command
with its worker. With a ``state_dir`` each job's processes are also recorded there
(:mod:`tinymlaas.executors.procs`) and a new executor ends those a killed one left behind.

A worker's unexpected exception reaches the user as one line with a reference; its
traceback goes to the ``tinymlaas.steps`` log, never into the result.

Jobs come in as :mod:`tinymlaas.contracts.jobs` messages: the executor makes their files
(blobs of the local artifact store, directory-shaped ones unpacked into the job's
directory), hands the worker process a JSON job with those paths, stores the output in the
artifact store and answers with its :class:`~tinymlaas.contracts.jobs.ArtifactRef`. The job's
directory is removed when the job ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.spawn
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tinymlaas.artifacts.local import LocalArtifactStore
from tinymlaas.contracts.jobs import (
    ArtifactRef,
    DatasetRef,
    EvaluateJob,
    JobResult,
    ProgressEvent,
    TransformJob,
)
from tinymlaas.domain import ArtifactKind
from tinymlaas.domain.entities import DIRECTORY_KINDS, FILE_NAMES
from tinymlaas.errors import InvalidInputError
from tinymlaas.executors.base import Executor, JobHandle, JobStatus, ProgressCallback
from tinymlaas.executors.procs import (
    ProcessBook,
    kill_recorded,
    new_scratch_dir,
    remove_scratch_dir,
)
from tinymlaas.transformers.sandbox import kill_descendants

__all__ = ["LocalExecutor"]

# Imported once by the fork server so that steps start warm. torch is here because every
# PyTorch step and export needs it; the ONNX tool chain because most pipelines use it.
PRELOAD = ["numpy", "onnx", "onnxruntime", "onnxruntime.quantization", "onnxsim", "torch",
           "tinymlaas.executors.worker", "tinymlaas.evaluation.evaluate",
           "tinymlaas.evaluation.runtime", "tinymlaas.transformers.registry"]
_POLL_S = 0.05
#: How much of a step's log a result carries.
LOG_TAIL = 64 * 1024
step_log = logging.getLogger("tinymlaas.steps")
_context_lock = threading.Lock()
_context: Any = None
_starting = threading.local()
_original_preparation_data = multiprocessing.spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """Like multiprocessing's, minus re-importing ``__main__`` for our own workers.

    The worker's code lives in this package, so the parent's main script is never needed
    there; importing it again would cost every step time and break scripts that lack an
    ``if __name__ == "__main__"`` guard. Other users of multiprocessing are unaffected.
    """
    data = _original_preparation_data(name)
    if getattr(_starting, "worker", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _fork_context() -> Any:
    global _context
    with _context_lock:
        if _context is None:
            multiprocessing.spawn.get_preparation_data = _preparation_data
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
        return _context


class LocalJob(JobHandle):
    def __init__(self, job_id: str, job_dir: Path, process: Any, timeout_s: float,
                 memory_mb: int, scratch: Path, record: dict[str, Any] | None) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self.process = process
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.scratch = scratch
        self.record = record
        self.started = time.monotonic()
        self.stop_reason: str | None = None


def _failure(message: str, error_type: str) -> dict[str, Any]:
    return {"ok": False, "output": None, "metrics": {}, "error": message,
            "error_type": error_type}


def _read_tail(path: Path) -> str:
    if not path.exists():
        return ""
    return path.read_bytes()[-LOG_TAIL:].decode("utf-8", errors="replace")


def _tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (empty when it is gone)."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


class LocalExecutor(Executor):
    """Runs jobs as local worker processes.

    Args:
        artifacts: Where inputs are read and outputs stored.
        work_root: Where each job gets its directory while it runs.
        timeout_s: Default wall-clock limit of a job.
        memory_mb: Default resident-memory limit of a job (process and children).
        sandbox_user: The user command steps run as when this process is root.
        state_dir: Where running jobs' processes are recorded; the leftovers of a dead
            executor recorded there are killed now (``swept`` lists their job ids).
        key_dir: The signing-key directory of a project, for the steps that sign; without
            it, such steps are refused.
    """

    def __init__(self, artifacts: LocalArtifactStore, work_root: Path,
                 timeout_s: float = 3600.0, memory_mb: int = 8192, *,
                 sandbox_user: str = "nobody", state_dir: Path | None = None,
                 key_dir: Any = None) -> None:
        self.artifacts = artifacts
        self.work_root = Path(work_root)
        self.key_dir = key_dir
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.sandbox_user = sandbox_user
        self.book = ProcessBook(state_dir) if state_dir is not None else None
        self.swept = self.book.sweep() if self.book is not None else []

    def submit(self, job: TransformJob | EvaluateJob) -> LocalJob:
        from tinymlaas.executors.worker import run_job

        job_id = job.job_id
        timeout_s = float(job.timeout_s or self.timeout_s)
        memory_mb = int(job.memory_mb or self.memory_mb)
        job_dir = self.work_root / re.sub(r"[^A-Za-z0-9._-]", "_", job_id)
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        try:
            spec = self._files(job, job_dir)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        scratch = new_scratch_dir()
        spec.update(job_id=job_id, job_dir=str(job_dir), timeout_s=timeout_s,
                    memory_mb=memory_mb, owner_pid=os.getpid(),
                    sandbox={"user": self.sandbox_user, "timeout_s": timeout_s,
                             "memory_mb": memory_mb, "scratch": str(scratch)})
        (job_dir / "job.json").write_text(json.dumps(spec, indent=1))
        record = self.book.open(job_id, scratch) if self.book is not None else None
        process = _fork_context().Process(target=run_job, args=(json.dumps(spec),), daemon=True)
        _starting.worker = True
        try:
            process.start()
        except BaseException:
            remove_scratch_dir(scratch)
            shutil.rmtree(job_dir, ignore_errors=True)
            if record is not None and self.book is not None:
                self.book.close(record)
            raise
        finally:
            _starting.worker = False
        handle = LocalJob(job_id, job_dir, process, timeout_s, memory_mb, scratch, record)
        self._record(handle, _tree(process.pid))
        return handle

    def _files(self, job: TransformJob | EvaluateJob, job_dir: Path) -> dict[str, Any]:
        """The worker's JSON job: the message's fields, with local paths for its artifacts."""
        spec: dict[str, Any] = job.model_dump(mode="json", exclude={"input", "dataset",
                                                                    "reference", "signs"})
        spec["kind"] = job.type
        spec["input"] = {"path": str(self._input(job.input, job_dir)), "kind": job.input.kind,
                         "sha256": job.input.sha256}
        spec["dataset"] = self._dataset(job.dataset) if job.dataset is not None else None
        if isinstance(job, EvaluateJob):
            spec["reference"] = (str(self.artifacts.path(job.reference.sha256))
                                 if job.reference is not None else None)
        elif job.signs:
            if self.key_dir is None:
                raise InvalidInputError("this executor holds no signing keys, so it cannot "
                                        "run a step that signs")
            spec["key_dir"] = str(self.key_dir(job.project))
        return spec

    def _input(self, ref: ArtifactRef, job_dir: Path) -> Path:
        if ArtifactKind(ref.kind) in DIRECTORY_KINDS:
            return self.artifacts.unpack(ref.sha256, job_dir / "input")
        return self.artifacts.path(ref.sha256)

    def _dataset(self, ref: DatasetRef) -> dict[str, Any]:
        return {"path": str(self.artifacts.path(ref.artifact.sha256)), "task": ref.task,
                "splits": ref.splits, "num_classes": ref.num_classes}

    def _record(self, handle: LocalJob, procs: list[psutil.Process]) -> None:
        if self.book is not None and handle.record is not None:
            self.book.add(handle.record, procs)

    def status(self, handle: JobHandle) -> JobStatus:
        assert isinstance(handle, LocalJob)
        return "running" if handle.process.is_alive() else "finished"

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, LocalJob)
        handle.stop_reason = handle.stop_reason or "cancelled"
        self._kill(handle)

    def wait(self, handle: JobHandle, on_progress: ProgressCallback | None = None) -> JobResult:
        assert isinstance(handle, LocalJob)
        try:
            result = self._wait(handle, on_progress)
            traceback = result.pop("traceback", None)
            if traceback:
                step_log.error("step %s failed unexpectedly (reference %s):\n%s",
                               handle.job_id, result.get("ref"), traceback)
            output = None
            if result["ok"]:
                output = self._store(Path(result["output"]["path"]),
                                     ArtifactKind(result["output"]["kind"]))
            return JobResult(job_id=handle.job_id, ok=bool(result["ok"]), output=output,
                             metrics=result.get("metrics") or {}, error=result.get("error"),
                             error_type=result.get("error_type"),
                             log=_read_tail(handle.job_dir / "step.log"))
        finally:
            self._release(handle)
            shutil.rmtree(handle.job_dir, ignore_errors=True)

    def _store(self, path: Path, kind: ArtifactKind) -> ArtifactRef:
        """Put a step's output (a file, or a directory as a zip) in the artifact store."""
        sha, size = (self.artifacts.put_directory(path) if path.is_dir()
                     else self.artifacts.put_file(path))
        return ArtifactRef(sha256=sha, kind=kind.value, size=size,
                           name=FILE_NAMES.get(kind, path.name))

    def _wait(self, handle: LocalJob,
              on_progress: ProgressCallback | None) -> dict[str, Any]:
        progress_file = handle.job_dir / "progress.jsonl"
        read = 0
        peak_mb = 0.0
        while handle.process.is_alive():
            handle.process.join(_POLL_S)
            if on_progress is not None and progress_file.exists():
                with progress_file.open() as fh:
                    fh.seek(read)
                    chunk = fh.read()
                    complete = chunk[: chunk.rfind("\n") + 1]
                    read += len(complete)
                for line in complete.splitlines():
                    event = json.loads(line)
                    on_progress(ProgressEvent(job_id=handle.job_id,
                                              fraction=min(max(event["progress"], 0.0), 1.0),
                                              message=event["message"]))
            if not handle.process.is_alive():
                break
            tree = _tree(handle.process.pid)
            self._record(handle, tree)
            rss = _rss_mb(tree)
            peak_mb = max(peak_mb, rss)
            if rss > handle.memory_mb:
                handle.stop_reason = (f"out of memory: the step used {rss:.0f} MB, over its "
                                      f"limit of {handle.memory_mb} MB")
                self._kill(handle)
            elif time.monotonic() - handle.started > handle.timeout_s:
                handle.stop_reason = f"timed out after {handle.timeout_s:g} s"
                self._kill(handle)
        handle.process.join()
        if handle.stop_reason is not None:
            kind = "Cancelled" if handle.stop_reason == "cancelled" else "ResourceLimit"
            return _failure(handle.stop_reason, kind)
        result_file = handle.job_dir / "result.json"
        if not result_file.exists():
            code = handle.process.exitcode
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                why = " (probably out of memory)" if name == "SIGKILL" else ""
                return _failure(f"the worker process died from {name}{why}", "WorkerCrashed")
            return _failure(f"the worker process exited with code {code} without a result",
                            "WorkerCrashed")
        result: dict[str, Any] = json.loads(result_file.read_text())
        result.setdefault("metrics", {})["worker_peak_rss_mb"] = round(peak_mb, 1)
        return result

    @staticmethod
    def _kill(handle: LocalJob) -> None:
        """Kill the worker's descendants (and the groups they lead), then the worker."""
        kill_descendants(handle.process.pid)
        with contextlib.suppress(psutil.Error):
            psutil.Process(handle.process.pid).kill()
        if handle.record is not None:
            kill_recorded(handle.record)

    def _release(self, handle: LocalJob) -> None:
        """After the job: end anything of it still running, remove its scratch and record."""
        if handle.record is not None:
            kill_recorded(handle.record)
        remove_scratch_dir(handle.scratch)
        if self.book is not None and handle.record is not None:
            self.book.close(handle.record)
