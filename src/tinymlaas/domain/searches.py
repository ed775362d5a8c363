"""A search (``optimize``): its request, its state, the candidates as they finish and its
outcome. Stores hand these out; the API, the web and the CLI render them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

__all__ = [
    "MAX_SEARCH_BUDGET_S",
    "MAX_SEARCH_EPOCHS",
    "MAX_SEARCH_TRIALS",
    "OBJECTIVES",
    "Candidate",
    "LayerSensitivity",
    "Objective",
    "Search",
    "SearchState",
]

Objective = Literal["size", "latency", "ram"]
OBJECTIVES: tuple[str, ...] = ("size", "latency", "ram")
#: Bounds of a search request.
MAX_SEARCH_TRIALS = 200
MAX_SEARCH_BUDGET_S = 7 * 24 * 3600.0
MAX_SEARCH_EPOCHS = 100


class SearchState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


#: States a search does not leave.
SEARCH_DONE = frozenset({SearchState.succeeded, SearchState.failed, SearchState.cancelled})


class Candidate(BaseModel):
    """One evaluated pipeline of a search: a real run."""

    trial: int
    run_id: str
    name: str
    steps: list[str]
    choice: dict[str, Any]
    status: str
    error: str | None = None
    accuracy: float | None = Field(default=None, description="quality score, higher is "
                                   "better: accuracy, AUC, mean cosine, SNR or negative "
                                   "MAE")
    accuracy_drop: float | None = Field(default=None, description="the drop of the task's "
                                        "primary metric against the input model, in its "
                                        "unit (positive: worse)")
    quality_metric: str | None = Field(default=None, description="the task's primary "
                                       "metric (tinymlaas.domain.quality)")
    quality: float | None = Field(default=None, description="its value, in its own unit")
    file_bytes: int | None = None
    latency_ms: float | None = None
    ram_bytes: int | None = None
    arena_bytes: int | None = Field(default=None, description="peak activation arena from "
                                    "the device analysis")
    flash_bytes: int | None = None
    macs: int | None = None
    parameters: int | None = None
    objective: float | None = None
    found_after_s: float = Field(default=0.0, description="seconds into the search when "
                                 "this candidate's run finished")
    feasible: bool = False
    violations: list[str] = Field(default_factory=list)
    pareto: bool = False
    test: dict[str, Any] | None = Field(default=None, description="the recommended (or "
                                        "closest) candidate's figures on the held-out "
                                        "half of the test split, which the search never "
                                        "saw: run_id, samples, quality, accuracy_drop, "
                                        "file_bytes, size_ratio, latency_ms")


class LayerSensitivity(BaseModel):
    """What compressing one layer alone costs, in the dataset task's primary metric
    (:mod:`tinymlaas.domain.quality`): accuracy points, mean cosine to the float model's
    outputs, MAE, AUC or output SNR."""

    layer: str
    probe: Literal["quantize-int8", "prune-50%"]
    metric: str = Field(default="accuracy", description="the task's primary metric: "
                        "accuracy, cosine_mean, mae, auc or snr_db")
    value: float = Field(description="the metric with this layer compressed, in its unit")
    drop: float | None = Field(description="how much worse than the float model, in the "
                               "metric's unit (positive: worse); none for the SNR, whose "
                               "float reference is unbounded")
    advice: str

    @model_validator(mode="before")
    @classmethod
    def _accuracy_of_old_reports(cls, data: Any) -> Any:
        """Reports stored before the metric was recorded hold ``accuracy``."""
        if isinstance(data, dict) and "value" not in data and "accuracy" in data:
            data = {k: v for k, v in data.items() if k != "accuracy"} | {
                "value": data["accuracy"]}
        return data


def _now() -> datetime:
    return datetime.now(UTC)


class Search(BaseModel):
    """A search of compression pipelines within an accuracy budget, and what it found."""

    id: str
    project: str
    created_by: str | None = None
    model_id: str
    model_name: str
    dataset_id: str
    dataset_name: str
    device: str | None = None
    objective: Objective = "size"
    max_accuracy_drop: float = 1.0
    quality_budget: str | None = Field(default=None, description="the budget in the "
                                       "dataset task's own metric, e.g. cosine=0.01 "
                                       "(classification: max_accuracy_drop)")
    time_budget_s: float = 600.0
    max_trials: int | None = None
    epochs: int = 3
    seed: int = 0
    state: SearchState = SearchState.queued
    cancel_requested: bool = False
    error: str | None = None
    message: str = ""
    baseline: dict[str, Any] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(default_factory=list)
    pareto: list[str] = Field(default_factory=list, description="run ids on the "
                              "quality/objective front")
    recommended: str | None = Field(default=None, description="the best run meeting every "
                                    "constraint")
    closest: str | None = Field(default=None, description="when none meets them: the run "
                                "nearest to the accuracy budget among those that fit")
    sensitivity: list[LayerSensitivity] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None

    @property
    def done(self) -> bool:
        return self.state in SEARCH_DONE
