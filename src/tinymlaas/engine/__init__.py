"""Plans runs, resolves cache hits, dispatches steps to an executor, records results."""

from tinymlaas.engine.engine import Engine, RunEvent, step_key

__all__ = ["Engine", "RunEvent", "step_key"]
