"""Local executor: each job in its own process, forked from a warm fork server.

The fork server imports the heavy libraries once, so a step starts in milliseconds, while
a crash, a hang or runaway memory still only takes its own process down. The parent
watches every job for its wall-clock timeout and resident-memory limit (the process and
its children) and kills it when either is crossed.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.spawn
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from tinymlaas.executors.base import Executor, JobHandle, JobResult, JobStatus, ProgressCallback

__all__ = ["LocalExecutor"]

# Imported once by the fork server so that steps start warm. torch is here because every
# PyTorch step and export needs it; the ONNX tool chain because most pipelines use it.
PRELOAD = ["numpy", "onnx", "onnxruntime", "onnxruntime.quantization", "onnxsim", "torch",
           "tinymlaas.executors.worker", "tinymlaas.evaluation.evaluate",
           "tinymlaas.evaluation.runtime", "tinymlaas.transformers.registry"]
_POLL_S = 0.05
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
                 memory_mb: int) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self.process = process
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.started = time.monotonic()
        self.stop_reason: str | None = None


def _failure(message: str, error_type: str) -> JobResult:
    return {"ok": False, "output": None, "metrics": {}, "error": message,
            "error_type": error_type}


def _rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return 0.0


class LocalExecutor(Executor):
    """Runs jobs as local worker processes.

    Args:
        timeout_s: Default wall-clock limit of a job.
        memory_mb: Default resident-memory limit of a job (process and children).
    """

    def __init__(self, timeout_s: float = 3600.0, memory_mb: int = 8192) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def submit(self, job: dict[str, Any]) -> LocalJob:
        from tinymlaas.executors.worker import run_job

        job_dir = Path(job["job_dir"])
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "job.json").write_text(json.dumps(job, indent=1))
        process = _fork_context().Process(target=run_job, args=(json.dumps(job),), daemon=True)
        _starting.worker = True
        try:
            process.start()
        finally:
            _starting.worker = False
        return LocalJob(job.get("job_id") or uuid.uuid4().hex, job_dir, process,
                        float(job.get("timeout_s") or self.timeout_s),
                        int(job.get("memory_mb") or self.memory_mb))

    def status(self, handle: JobHandle) -> JobStatus:
        assert isinstance(handle, LocalJob)
        return "running" if handle.process.is_alive() else "finished"

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, LocalJob)
        handle.stop_reason = handle.stop_reason or "cancelled"
        self._kill(handle)

    def wait(self, handle: JobHandle, on_progress: ProgressCallback | None = None) -> JobResult:
        assert isinstance(handle, LocalJob)
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
                    on_progress(event["progress"], event["message"])
            if not handle.process.is_alive():
                break
            rss = _rss_mb(handle.process.pid)
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
        result: JobResult = json.loads(result_file.read_text())
        result.setdefault("metrics", {})["worker_peak_rss_mb"] = round(peak_mb, 1)
        return result

    @staticmethod
    def _kill(handle: LocalJob) -> None:
        try:
            proc = psutil.Process(handle.process.pid)
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.Error:
            pass
