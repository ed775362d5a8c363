"""View models: runs and comparisons shaped for tables (formatting stays in templates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinymlaas.domain import Run
from tinymlaas.domain.quality import quality_summary
from tinymlaas.service.compare import runtime_of, same_runtime_ratio

__all__ = ["STEP_DONE", "RunRow", "run_row"]

#: Step statuses that count as finished successfully.
STEP_DONE = frozenset({"succeeded", "cached"})


@dataclass
class RunRow:
    """One run in a table: its result and how it compares with its baseline (the float32
    input model in the same runtime; no ratio when the runtimes differ)."""

    run: Run
    model_name: str
    accuracy: float | None = None
    accuracy_change: float | None = None
    file_bytes: int | None = None
    size_ratio: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    peak_memory_mb: float | None = None
    memory_ratio: float | None = None
    runtime: str | None = None
    baseline_runtime: str | None = None
    fit: dict[str, Any] | None = None
    steps: list[str] = field(default_factory=list)
    #: The task's primary metric (see :func:`tinymlaas.domain.quality.quality_summary`).
    quality: dict[str, Any] = field(default_factory=dict)


def run_row(run: Run, model_names: dict[str, str]) -> RunRow:
    base, res = run.baseline, run.result
    accuracy, base_acc = res.get("accuracy"), base.get("accuracy")
    return RunRow(
        run=run, model_name=model_names.get(run.model_id, run.model_id),
        accuracy=accuracy,
        accuracy_change=None if accuracy is None or base_acc is None else accuracy - base_acc,
        file_bytes=res.get("file_bytes"),
        size_ratio=same_runtime_ratio(base, res, "file_bytes"),
        latency_ms=res.get("latency_ms_p50"),
        latency_ratio=same_runtime_ratio(base, res, "latency_ms_p50"),
        peak_memory_mb=res.get("peak_memory_mb"),
        memory_ratio=same_runtime_ratio(base, res, "peak_memory_mb"),
        runtime=runtime_of(res), baseline_runtime=runtime_of(base),
        fit=res.get("fit") or None,
        steps=[s.transformer for s in run.steps],
        quality=quality_summary(base, res))
