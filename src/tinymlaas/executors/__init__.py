"""Where steps run. Only the typed messages of :mod:`tinymlaas.contracts.jobs` cross the
boundary: the job in, the result out."""

from tinymlaas.executors.base import Executor, JobHandle
from tinymlaas.executors.local import LocalExecutor

__all__ = ["Executor", "JobHandle", "LocalExecutor"]
