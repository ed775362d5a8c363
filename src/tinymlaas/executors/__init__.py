"""Where steps run. Only JSON crosses the boundary: the job spec in, the result out."""

from tinymlaas.executors.base import Executor, JobHandle, JobResult
from tinymlaas.executors.local import LocalExecutor

__all__ = ["Executor", "JobHandle", "JobResult", "LocalExecutor"]
