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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from tinymlaas.devices.analysis import Verdict, verdict_label
from tinymlaas.domain import Model, Run
from tinymlaas.domain.quality import quality_summary

__all__ = ["RUNTIME_NAMES", "ComparisonRow", "DeviceMetrics", "HostMetrics", "ReferenceMetrics",
           "comparison_row", "runtime_of", "same_runtime_ratio", "source_model_warnings"]

#: What each runtime name means, for tables, tooltips and legends.
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "c": "generated C (host build)",
                 "torch": "PyTorch"}


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


class HostMetrics(BaseModel):
    """Figures measured on the evaluating machine, in the run's runtime (not the device)."""

    runtime: str | None = Field(default=None, description="onnxruntime, c (the generated C "
                                "built for the evaluating machine) or torch")
    latency_ms: float | None = Field(default=None, description="p50 latency, batch 1, "
                                     "one thread")
    latency_ratio: float | None = Field(default=None, description="reference latency / "
                                        "this (> 1 is faster); only within one runtime")
    peak_memory_mb: float | None = Field(default=None, description="peak RAM the model "
                                         "adds to the evaluating process, in MiB")
    memory_ratio: float | None = Field(default=None, description="reference peak RAM / "
                                       "this; only within one runtime")


class DeviceMetrics(BaseModel):
    """The static verdict for the run's target device (``runtime``: the device runtime)."""

    device: str
    runtime: str
    verdict: Verdict
    fits: bool
    unsupported_ops: list[str] = Field(default_factory=list)
    arena_bytes: int | None = Field(default=None, description="peak activation arena")
    io_bytes: int | None = Field(default=None, description="input and output buffers")
    ram_needed_bytes: int = Field(description="arena + I/O + the runtime's own state")
    ram_limit_bytes: int
    flash_bytes: int | None = Field(default=None, description="the model's constants")
    flash_needed_bytes: int = Field(description="constants + the runtime's code")
    flash_limit_bytes: int
    memory_source: str | None = Field(default=None, description="'compiler' (exact plan) "
                                      "or 'graph' (an estimate: the compiler cannot build it)")
    latency_ms_estimate: float | None = None
    reasons: list[str] = Field(default_factory=list)

    @property
    def label(self) -> str:
        """``fits``, ``does not fit`` or ``unsupported ops: Cast, ConvInteger``."""
        return verdict_label(self.model_dump())

    @classmethod
    def from_fit(cls, fit: Mapping[str, Any]) -> DeviceMetrics:
        """From a stored fit verdict (also one recorded before verdicts had names)."""
        ops = list(fit.get("unsupported_ops") or [])
        verdict: Verdict = fit.get("verdict") or ("fits" if fit["fits"] else "does not fit")
        return cls(device=fit["device"], runtime=fit["runtime"], verdict=verdict,
                   fits=fit["fits"], unsupported_ops=ops,
                   arena_bytes=fit.get("activation_bytes"), io_bytes=fit.get("io_bytes"),
                   ram_needed_bytes=fit["ram_needed_bytes"],
                   ram_limit_bytes=fit["ram_available_bytes"],
                   flash_bytes=fit.get("weight_bytes"),
                   flash_needed_bytes=fit["flash_needed_bytes"],
                   flash_limit_bytes=fit["flash_available_bytes"],
                   memory_source=fit.get("memory_source"),
                   latency_ms_estimate=fit.get("latency_ms_estimate"),
                   reasons=list(fit.get("reasons") or []))


class ReferenceMetrics(BaseModel):
    """What the ratios are against, measured in its own runtime."""

    runtime: str | None = None
    accuracy: float | None = None
    file_bytes: int | None = None
    latency_ms: float | None = None
    peak_memory_mb: float | None = None


class ComparisonRow(BaseModel):
    """One run in a comparison; ratios are against the reference (``> 1`` is better) and
    only between figures of one runtime."""

    run_id: str
    name: str
    status: str
    steps: list[str]
    accuracy: float | None = None
    accuracy_change: float | None = None
    task: str | None = Field(default=None, description="the task the run was evaluated for")
    quality: dict[str, Any] = Field(
        default_factory=dict, description="the task's primary metric (see "
        "tinymlaas.domain.quality.quality_summary): key, label, unit, value, change, drop")
    fidelity: dict[str, Any] | None = Field(
        default=None, description="why the run is degraded: metric, value, threshold")
    top1_agreement: float | None = None
    file_bytes: int | None = None
    size_ratio: float | None = None
    macs: int | None = None
    parameters: int | None = None
    host: HostMetrics = Field(default_factory=HostMetrics)
    device: DeviceMetrics | None = None
    reference: str
    baseline: ReferenceMetrics = Field(default_factory=ReferenceMetrics,
                                       description="the reference's own figures")
    #: Why ratios are missing (the reference ran in another runtime, and why).
    notes: list[str] = Field(default_factory=list)
    #: The model the run started from: its id and content hash.
    source_model: str | None = None
    source_model_sha: str | None = None
    #: The comparison's warnings (the same on every row), e.g. runs that start from
    #: different models, whose metrics and ratios are not comparable.
    warnings: list[str] = Field(default_factory=list)


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
