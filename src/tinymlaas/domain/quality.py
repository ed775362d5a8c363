"""Each task's quality metric and its fidelity gate, defined once.

A task decides how a model's quality is measured (``evaluation.evaluate.quality_metrics``
computes the figures). This module says which of those figures is the task's *primary*
metric (what tables, plots, ``compare`` and ``optimize`` budgets are expressed in, in its own
unit and direction), and the *fidelity gate*: the threshold below which a run's output is
declared ``degraded`` against its input model instead of ``succeeded``. Everything that
shows or judges quality reads it from here, so a 1-point accuracy budget is never applied to
a cosine between 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinymlaas.domain.entities import Fidelity, Task

__all__ = [
    "BUDGET_METRICS",
    "DEFAULT_BUDGETS",
    "PRIMARY_METRICS",
    "Fidelity",
    "FidelityVerdict",
    "PrimaryMetric",
    "budget_metric",
    "budget_violation",
    "fidelity_verdict",
    "metric_drop",
    "parse_quality_budget",
    "primary_metric",
    "quality_summary",
    "resolve_quality_budget",
    "task_of",
]


@dataclass(frozen=True)
class PrimaryMetric:
    """The figure a task is judged by.

    ``key`` names it in an evaluation's metrics; ``budget`` is the name an ``optimize``
    budget uses for it (``--budget cosine=0.01``); ``digits`` how many decimals tables show.
    """

    key: str
    label: str
    unit: str
    higher_is_better: bool
    budget: str
    digits: int

    def format(self, value: float | None) -> str:
        """``value`` in this metric's unit, or ``-``."""
        if value is None:
            return "-"
        return f"{value:.{self.digits}f}{self.unit}"

    def drop(self, baseline: float | None, result: float | None) -> float | None:
        """How much worse ``result`` is than ``baseline`` (positive: worse), in the
        metric's own unit; ``None`` when either is missing."""
        if baseline is None or result is None:
            return None
        return baseline - result if self.higher_is_better else result - baseline


#: The primary metric of each task. Embedding and generic models are judged against the
#: original model's outputs (there are no labels to be right about).
PRIMARY_METRICS: dict[Task, PrimaryMetric] = {
    Task.classification: PrimaryMetric("accuracy", "accuracy", "%", True, "accuracy", 2),
    Task.regression: PrimaryMetric("mae", "MAE", "", False, "mae", 4),
    Task.anomaly: PrimaryMetric("auc", "AUC", "", True, "auc", 4),
    Task.embedding: PrimaryMetric("cosine_mean", "mean cosine", "", True, "cosine", 4),
    Task.generic: PrimaryMetric("snr_db", "SNR", " dB", True, "snr", 1),
}

#: Budget names ``optimize`` accepts, and the task each belongs to.
BUDGET_METRICS: dict[str, Task] = {m.budget: t for t, m in PRIMARY_METRICS.items()}

#: The budget a search uses when none is given: the largest accepted drop of the task's
#: primary metric (accuracy points, AUC, mean cosine, MAE increase), except for the SNR,
#: whose budget is a floor in dB (the input model's own SNR is infinite). Regression has
#: none (an MAE's scale is the label's): a search on it needs ``--budget mae=X``.
DEFAULT_BUDGETS: dict[Task, float | None] = {
    Task.classification: 1.0,
    Task.regression: None,
    Task.anomaly: 0.02,
    Task.embedding: 0.01,
    Task.generic: 30.0,
}


def primary_metric(task: Task | str) -> PrimaryMetric:
    """The primary metric of ``task``."""
    return PRIMARY_METRICS[Task(task)]


def task_of(metrics: dict[str, Any]) -> Task | None:
    """The task an evaluation's metrics were measured for: recorded in them (``task``), or
    for older evaluations inferred from the figures they hold."""
    recorded = metrics.get("task")
    if isinstance(recorded, str) and recorded in Task.__members__:
        return Task(recorded)
    for key, task in (("accuracy", Task.classification), ("mae", Task.regression),
                      ("mse", Task.regression), ("auc", Task.anomaly),
                      ("cosine_to_original", Task.embedding)):
        if key in metrics:
            return task
    return None


def quality_summary(baseline: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The primary metric of a run's result for tables: ``task``, ``key``, ``label``,
    ``unit``, ``higher_is_better``, ``value``, ``reference`` (the baseline's figure; 1 for a
    cosine, none for an SNR), ``change`` (value - reference), ``drop`` (positive: worse) and
    ``text`` (the value in its unit). Empty when the task is unknown."""
    task = task_of(result) or task_of(baseline)
    if task is None:
        return {}
    metric = primary_metric(task)
    value = result.get(metric.key)
    if metric.key == "cosine_mean" and value is None:
        value = result.get("cosine_to_original")
    value = float(value) if isinstance(value, int | float) else None
    if metric.key == "cosine_mean":
        reference: float | None = 1.0 if value is not None else None
    elif metric.key == "snr_db":
        reference = None
    else:
        base = baseline.get(metric.key)
        reference = float(base) if isinstance(base, int | float) else None
    change = None if value is None or reference is None else value - reference
    drop = None if change is None else (-change if metric.higher_is_better else change)
    return {"task": task.value, "key": metric.key, "label": metric.label, "unit": metric.unit,
            "higher_is_better": metric.higher_is_better, "value": value,
            "reference": reference, "change": change, "drop": drop,
            "text": metric.format(value)}


def metric_drop(task: Task | str, baseline: dict[str, Any],
                result: dict[str, Any]) -> float | None:
    """The drop of ``task``'s primary metric from ``baseline`` to ``result`` metrics.

    The cosine is measured against the original's outputs, so it is only in the result:
    the original against itself has a cosine of 1, and the drop is ``1 - cosine``. The SNR
    of the original against itself is infinite, so it has no drop (an SNR budget is a
    floor: see :func:`budget_violation`).
    """
    metric = primary_metric(task)
    value = result.get(metric.key)
    if metric.key == "cosine_mean":
        value = result.get("cosine_to_original") if value is None else value
        return None if value is None else 1.0 - float(value)
    if metric.key == "snr_db":
        return None
    base = baseline.get(metric.key)
    return metric.drop(None if base is None else float(base),
                       None if value is None else float(value))


def parse_quality_budget(text: str) -> tuple[str, float]:
    """``cosine=0.01`` → ``("cosine", 0.01)``; raises ``ValueError`` with what to write."""
    name, sep, number = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in BUDGET_METRICS:
        raise ValueError(f"quality budget {text!r} is not METRIC=VALUE with METRIC one of "
                         f"{', '.join(BUDGET_METRICS)} (e.g. cosine=0.01, accuracy=1)")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"quality budget {text!r}: {number.strip()!r} is not a number") \
            from None
    if not 0.0 <= value <= 1000.0 or value != value:
        raise ValueError(f"quality budget {text!r}: the value must be between 0 and 1000")
    return name, value


def budget_metric(task: Task | str, name: str | None) -> PrimaryMetric:
    """The metric a budget named ``name`` is in, checked against the dataset's ``task``.

    Raises:
        ValueError: the budget is in another task's metric (a cosine budget on a
            classification dataset, an accuracy budget on an embedding one).
    """
    metric = primary_metric(task)
    if name is not None and name != metric.budget:
        raise ValueError(f"a budget in {name} does not apply to this dataset: its task is "
                         f"{Task(task).value}, whose quality is measured as {metric.label}; "
                         f"give {metric.budget}=VALUE")
    return metric


def resolve_quality_budget(task: Task | str, max_accuracy_drop: float,
                           quality_budget: str | None) -> tuple[PrimaryMetric, float]:
    """The metric and value of a search's quality budget on a ``task`` dataset.

    ``quality_budget`` (``cosine=0.01``) wins; else a classification dataset uses
    ``max_accuracy_drop`` (points) and other tasks their default budget: an accuracy budget
    is never applied to another metric.

    Raises:
        ValueError: the budget is in another task's metric, or the task has no default
            budget and none was given.
    """
    if quality_budget is not None:
        name, value = parse_quality_budget(quality_budget)
        return budget_metric(task, name), value
    metric = primary_metric(task)
    if metric.key == "accuracy":
        return metric, float(max_accuracy_drop)
    default = DEFAULT_BUDGETS[Task(task)]
    if default is None:
        raise ValueError(f"this dataset's task ({Task(task).value}) has no default quality "
                         f"budget: give one in its metric, e.g. {metric.budget}=0.1")
    return metric, default


def budget_violation(task: Task | str, baseline: dict[str, Any], result: dict[str, Any],
                     budget: float) -> str | None:
    """Why ``result`` misses a search's quality ``budget`` (in the task's primary metric),
    or ``None`` when it meets it or has no figure to judge."""
    metric = primary_metric(task)
    if metric.key == "snr_db":
        snr = result.get("snr_db")
        if isinstance(snr, int | float) and snr < budget:
            return f"SNR {snr:.1f} dB < {budget:g} dB"
        return None
    drop = metric_drop(task, baseline, result)
    if drop is not None and drop > budget:
        return f"{metric.label} drop {drop:.{metric.digits}f} > {budget:.{metric.digits}f}"
    return None


@dataclass(frozen=True)
class FidelityVerdict:
    """Why a run is degraded: the figure, the threshold and one sentence with both."""

    metric: str
    value: float
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold,
                "message": self.message}


def fidelity_verdict(task: Task | str, baseline: dict[str, Any], result: dict[str, Any],
                     gate: Fidelity | None = None) -> FidelityVerdict | None:
    """The first threshold of ``gate`` that ``result`` (the output's metrics, measured
    against the input model's outputs) misses compared with ``baseline`` (the input
    model's metrics); ``None`` when it passes or has no figure to judge."""
    gate = gate or Fidelity()
    task = Task(task)

    def number(metrics: dict[str, Any], key: str) -> float | None:
        value = metrics.get(key)
        return float(value) if isinstance(value, int | float) else None

    if task is Task.classification and gate.max_accuracy_drop is not None:
        base, res = number(baseline, "accuracy"), number(result, "accuracy")
        if base is not None and res is not None and base - res > gate.max_accuracy_drop:
            return FidelityVerdict(
                "accuracy_drop", base - res, gate.max_accuracy_drop,
                f"accuracy fell by {base - res:.2f} points ({base:.2f}% → {res:.2f}%), more "
                f"than the {gate.max_accuracy_drop:g}-point fidelity threshold")
    if task is Task.embedding and gate.min_cosine is not None:
        cosine = number(result, "cosine_mean")
        if cosine is None:
            cosine = number(result, "cosine_to_original")
        if cosine is not None and not cosine >= gate.min_cosine:  # NaN fails too
            low = number(result, "cosine_min")
            return FidelityVerdict(
                "cosine_mean", cosine, gate.min_cosine,
                f"mean cosine to the input model's outputs is {cosine:.4f}"
                + (f" (min {low:.4f})" if low is not None else "")
                + f", under the {gate.min_cosine:g} fidelity threshold")
    if task is Task.generic and gate.min_snr_db is not None:
        snr = number(result, "snr_db")
        if snr is not None and snr < gate.min_snr_db:
            return FidelityVerdict(
                "snr_db", snr, gate.min_snr_db,
                f"output SNR against the input model is {snr:.1f} dB, under the "
                f"{gate.min_snr_db:g} dB fidelity threshold")
    if task is Task.regression and gate.max_mae_increase_pct is not None:
        base, res = number(baseline, "mae"), number(result, "mae")
        if base is not None and res is not None:
            pct = (res - base) / base * 100.0 if base > 0 else (0.0 if res <= 0 else float("inf"))
            if pct > gate.max_mae_increase_pct:
                return FidelityVerdict(
                    "mae_increase_pct", pct, gate.max_mae_increase_pct,
                    f"MAE rose by {pct:.1f}% ({base:.4g} → {res:.4g}), more than the "
                    f"{gate.max_mae_increase_pct:g}% fidelity threshold")
    if task is Task.anomaly and gate.max_auc_drop is not None:
        base, res = number(baseline, "auc"), number(result, "auc")
        if base is not None and res is not None and base - res > gate.max_auc_drop:
            return FidelityVerdict(
                "auc_drop", base - res, gate.max_auc_drop,
                f"AUC fell by {base - res:.3f} ({base:.3f} → {res:.3f}), more than the "
                f"{gate.max_auc_drop:g} fidelity threshold")
    return None
