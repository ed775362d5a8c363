"""Request and response bodies of the searches (``optimize``) API.

Pure pydantic like :mod:`tinymlaas.api.schemas`, shared by the server and the SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from tinymlaas.api.schemas import Create, Public, StrictInteger, StrictNumber
from tinymlaas.domain.entities import MAX_SEED
from tinymlaas.domain.quality import parse_quality_budget
from tinymlaas.domain.searches import (
    MAX_SEARCH_BUDGET_S,
    MAX_SEARCH_EPOCHS,
    MAX_SEARCH_TRIALS,
    Candidate,
    LayerSensitivity,
    Objective,
    SearchState,
)

__all__ = ["SearchCreate", "SearchEventPublic", "SearchPublic"]

_Ref = Annotated[str, Field(min_length=1, max_length=100)]


class SearchCreate(Create):
    """A search of compression pipelines: the same choices as ``tinymlaas optimize``."""

    model: _Ref = Field(description="Model name or id (in the project).")
    dataset: _Ref = Field(description="Dataset name or id (in the project).")
    device: _Ref | None = Field(default=None, description="Target device: its flash and "
                                "RAM are hard limits.")
    objective: Objective = Field(default="size", description="What to minimise while "
                                 "keeping accuracy: file size, p50 latency or RAM.")
    max_accuracy_drop: Annotated[StrictNumber, Field(ge=0.0, le=100.0)] = Field(
        default=1.0, description="Largest accepted accuracy loss, in points (the budget of "
        "a classification dataset).")
    quality_budget: Annotated[str, Field(min_length=3, max_length=40)] | None = Field(
        default=None, description="The budget in the dataset task's own metric, "
        "METRIC=VALUE: accuracy=1, cosine=0.01 (mean cosine drop), mae=0.1, auc=0.02, "
        "snr=30 (a floor in dB). Default: the task's.")
    time_budget_s: Annotated[StrictNumber, Field(gt=0.0, le=MAX_SEARCH_BUDGET_S)] = Field(
        default=600.0, description="Search time in seconds, checked between candidates.")
    max_trials: Annotated[StrictInteger, Field(ge=1, le=MAX_SEARCH_TRIALS)] | None = Field(
        default=None, description="Exactly this many candidate runs at most (default: as "
                                  "many as the time budget allows).")
    epochs: Annotated[StrictInteger, Field(ge=1, le=MAX_SEARCH_EPOCHS)] = Field(
        default=3, description="Fine-tuning epochs of the training steps.")
    seed: Annotated[StrictInteger, Field(ge=0, le=MAX_SEED)] = Field(
        default=0, description="Seed of the sampler.")
    project: _Ref | None = Field(default=None, description="Project (default: your own).")

    @field_validator("quality_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quality_budget(value)  # a ValueError is the 422's message
        return value

    def request(self) -> dict[str, Any]:
        """The search's choices, without the project."""
        return self.model_dump(exclude={"project"})


class SearchPublic(Public):
    """A search, its candidates as they finish, and its outcome."""

    id: str
    project: str
    created_by: str | None = None
    model_id: str
    model_name: str
    dataset_id: str
    dataset_name: str
    device: str | None = None
    objective: Objective
    max_accuracy_drop: float
    quality_budget: str | None = None
    time_budget_s: float
    max_trials: int | None = None
    epochs: int
    seed: int
    state: SearchState
    cancel_requested: bool = Field(description="A cancel was asked for; a running search "
                                   "stops within seconds.")
    error: str | None = None
    message: str = Field(description="The outcome in words: the recommended run, or why no "
                         "candidate met the budget and which came closest.")
    baseline: dict[str, Any] = Field(description="Metrics of the input model.")
    candidates: list[Candidate]
    pareto: list[str] = Field(description="Run ids on the quality/objective front.")
    recommended: str | None = Field(description="The run with the best objective that meets "
                                    "the accuracy budget and the device's limits.")
    closest: str | None = None
    sensitivity: list[LayerSensitivity] = Field(description="When no candidate qualifies: "
                                                "how much each layer loses compressed alone.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None


class SearchEventPublic(Public):
    """A change of a search's state (event ``state``)."""

    search_id: str
    state: SearchState
