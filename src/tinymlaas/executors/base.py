"""The executor interface: ``submit(job) -> handle``, ``status``, ``wait``, ``cancel``.

A job is a JSON object (see :mod:`tinymlaas.executors.worker`); a result is a JSON object
``{"ok", "output": {"path", "kind"} | null, "metrics", "error", "error_type"}``. Remote
executors implement the same four calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Executor", "JobHandle", "JobResult", "ProgressCallback"]

JobResult = dict[str, Any]
ProgressCallback = Callable[[float, str], None]
JobStatus = Literal["running", "finished"]


class JobHandle(ABC):
    """A submitted job."""

    job_id: str


class Executor(ABC):
    @abstractmethod
    def submit(self, job: dict[str, Any]) -> JobHandle:
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
