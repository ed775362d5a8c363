"""What a comparison of runs shows: one :class:`ComparisonRow` per run.

The rows are plain pydantic models with no dependency on the ML stack, so the service that
computes them (:mod:`tinymlaas.service.compare`), the API's response schema and the SDK on a
machine without the server stack all share one definition. How the figures are computed,
and why ratios are only taken within one runtime, is explained in
:mod:`tinymlaas.service.compare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["RUNTIME_NAMES", "ComparisonRow", "DeviceMetrics", "HostMetrics", "ReferenceMetrics",
           "Verdict", "verdict_label"]

#: What each runtime name means, for tables, tooltips and legends.
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "c": "generated C (host build)",
                 "torch": "PyTorch"}

#: A device fit verdict: the model fits, does not fit (memory, or a runtime the device
#: lacks), or the runtime cannot run it at all (operators it lacks).
Verdict = Literal["fits", "does not fit", "unsupported ops"]


def verdict_label(fit: Mapping[str, Any]) -> str:
    """A stored verdict (a fit verdict as a dict, possibly from an older version without
    ``verdict``) as people read it: ``fits``, ``does not fit`` or ``unsupported ops: Cast,
    ConvInteger``."""
    ops = fit.get("unsupported_ops") or []
    if ops:
        return "unsupported ops: " + ", ".join(ops)
    return "fits" if fit.get("fits") else "does not fit"


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
