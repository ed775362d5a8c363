"""Comparing runs without mixing what cannot be mixed.

Every row keeps two kinds of figures apart:

- **host**: measured on the machine that evaluated the run, in the run's *runtime*
  (``onnxruntime``, ``c`` for the generated C built for that machine, or ``torch``):
  latency and the peak RAM the model adds to the evaluating process;
- **device**: the static verdict for the run's target device: the arena and I/O buffers
  the model needs in RAM, its constants in flash, the device's limits, and ``fits``,
  ``does not fit`` (memory) or ``unsupported ops`` (the device runtime lacks operators).

A ratio (size, speed, memory) is only computed between figures of the same runtime: the
engine measures each run's baseline, the float32 input model, in the runtime of the run's
output. When that was impossible (a float32 model the compiler cannot build) the ratios are
``None`` and ``notes`` say why.

The row models live in :mod:`tinymlaas.domain.comparison` (so the API's schemas and the SDK
need no ML stack); they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinymlaas.domain import Model, Run
from tinymlaas.domain.comparison import (
    RUNTIME_NAMES,
    ComparisonRow,
    DeviceMetrics,
    HostMetrics,
    ReferenceMetrics,
)
from tinymlaas.domain.quality import quality_summary

__all__ = ["RUNTIME_NAMES", "ComparisonRow", "DeviceMetrics", "HostMetrics", "ReferenceMetrics",
           "comparison_row", "runtime_of", "same_runtime_ratio", "source_model_warnings"]


def runtime_of(metrics: Mapping[str, Any]) -> str | None:
    """The runtime that measured ``metrics``; evaluations recorded before runtimes were
    kept tell by their figures (only generated C has an arena)."""
    if not metrics:
        return None
    return metrics.get("runtime") or ("c" if "arena_bytes" in metrics else "onnxruntime")


def same_runtime_ratio(base: Mapping[str, Any], value: Mapping[str, Any],
                       key: str) -> float | None:
    """``base[key] / value[key]`` when both were measured in the same runtime, else None."""
    if runtime_of(base) is None or runtime_of(base) != runtime_of(value):
        return None
    return _ratio(base.get(key), value.get(key))


def comparison_row(run: Run, model: Model, base: Mapping[str, Any], reference: str,
                   warnings: list[str]) -> ComparisonRow:
    """``run`` against ``base`` (its baseline's or a reference run's metrics)."""
    res = run.result
    notes = []
    runtime, base_runtime = runtime_of(res), runtime_of(base)
    if runtime and base_runtime and runtime != base_runtime:
        why = f" ({base['note']})" if base.get("note") else ""
        notes.append(f"no size, speed or memory ratio: the run is measured in "
                     f"{RUNTIME_NAMES.get(runtime, runtime)}, its reference in "
                     f"{RUNTIME_NAMES.get(base_runtime, base_runtime)}{why}")
    fit = res.get("fit")
    quality = quality_summary(dict(base), res)
    return ComparisonRow(
        run_id=run.id, name=run.name, status=run.status.value,
        steps=[s.transformer for s in run.steps],
        accuracy=res.get("accuracy"),
        accuracy_change=_diff(res.get("accuracy"), base.get("accuracy")),
        task=quality.get("task"), quality=quality, fidelity=res.get("fidelity"),
        top1_agreement=res.get("top1_agreement"),
        file_bytes=res.get("file_bytes"),
        size_ratio=same_runtime_ratio(base, res, "file_bytes"),
        macs=res.get("macs"), parameters=res.get("parameters"),
        host=HostMetrics(runtime=runtime, latency_ms=res.get("latency_ms_p50"),
                         latency_ratio=same_runtime_ratio(base, res, "latency_ms_p50"),
                         peak_memory_mb=res.get("peak_memory_mb"),
                         memory_ratio=same_runtime_ratio(base, res, "peak_memory_mb")),
        device=DeviceMetrics.from_fit(fit) if fit else None,
        reference=reference,
        baseline=ReferenceMetrics(runtime=base_runtime, accuracy=base.get("accuracy"),
                                  file_bytes=base.get("file_bytes"),
                                  latency_ms=base.get("latency_ms_p50"),
                                  peak_memory_mb=base.get("peak_memory_mb")),
        notes=notes, source_model=run.model_id, source_model_sha=model.artifact_sha,
        warnings=warnings)


def source_model_warnings(models: list[Model]) -> list[str]:
    """A warning when the compared runs (and the reference) start from models of different
    content; the same model registered twice under two ids is the same model."""
    if len({m.artifact_sha for m in models}) <= 1:
        return []
    names = ", ".join(f"{m.name} ({m.id})" for m in models)
    return [f"these runs start from different models: {names}; their metrics and ratios "
            "are not comparable"]


def _diff(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _ratio(base: float | None, value: float | None) -> float | None:
    return None if not base or not value else base / value
