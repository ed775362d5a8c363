"""The executor interface: ``submit(job) -> handle``, ``status``, ``wait``, ``cancel``.

Jobs and results are the typed messages of :mod:`tinymlaas.contracts.jobs`: artifacts go
in and come out as content addresses, never as paths of the server's disk. An executor
makes the files a step reads where it runs it, and stores the output it makes (the local
executor in the local artifact store). Remote executors implement the same four calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

from tinymlaas.contracts.jobs import EvaluateJob, JobResult, ProgressEvent, TransformJob

__all__ = ["Executor", "JobHandle", "ProgressCallback"]

ProgressCallback = Callable[[ProgressEvent], None]
JobStatus = Literal["running", "finished"]


class JobHandle(ABC):
    """A submitted job."""

    job_id: str


class Executor(ABC):
    @abstractmethod
    def submit(self, job: TransformJob | EvaluateJob) -> JobHandle:
        """Start ``job``; returns at once."""

    @abstractmethod
    def status(self, handle: JobHandle) -> JobStatus: ...

    @abstractmethod
    def wait(self, handle: JobHandle, on_progress: ProgressCallback | None = None) -> JobResult:
        """Block until the job ends (or is stopped for time, memory or cancellation)."""

    @abstractmethod
    def cancel(self, handle: JobHandle) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""
