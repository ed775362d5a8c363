"""Accuracy-aware auto-compression: search pipelines and parameters with optuna.

Every candidate is a real run (``Services.create_run`` + ``execute_run``), so it is
evaluated, cached, compared and exported like any other. The search maximises quality and
minimises the objective (file size, latency or RAM) at once; the result always holds the
Pareto set, the recommended run (the best objective within the accuracy budget and the
device's flash and RAM) and, when no candidate qualifies, the closest one with a
per-layer sensitivity report.

Candidates are evaluated on the validation half of the dataset's test split; the chosen
one is then evaluated once more on the other half, which the selection never saw, and
those are the figures the result reports for it. Techniques that train in PyTorch are left
out, once and with the reason, when the model is an ONNX graph that cannot be converted;
a choice that was already tried (failed or not) is never run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from tinymlaas.domain import ArtifactKind, Device, Fidelity, Pipeline, Run, Task
from tinymlaas.domain.quality import (
    PrimaryMetric,
    budget_violation,
    metric_drop,
    quality_summary,
    resolve_quality_budget,
)
from tinymlaas.domain.searches import OBJECTIVES, Candidate, Objective
from tinymlaas.domain.units import human_bytes, human_kib
from tinymlaas.errors import InvalidInputError
from tinymlaas.optimize.sensitivity import LayerSensitivity, layer_sensitivity
from tinymlaas.optimize.space import (
    TORCH_FORMATS,
    TORCH_TECHNIQUES,
    Space,
    build_steps,
    suggest,
)

__all__ = ["Candidate", "Objective", "OptimizeResult", "optimize", "pareto_front",
           "parse_budget"]

_log = logging.getLogger("tinymlaas.optimize")

#: Objective values within this share of the best count as a tie, which the smaller quality
#: drop breaks (a 1 % smaller file is not worth a visibly worse model).
TIE_SHARE = 0.03
#: Sampled choices in a row that were all tried before: the space is exhausted.
MAX_REPEATS = 40


class OptimizeResult(BaseModel):
    """Everything the search found."""

    model: str
    dataset: str
    device: str | None
    objective: Objective
    max_accuracy_drop: float
    quality_metric: str = Field(default="accuracy", description="the metric of the quality "
                                "budget (the dataset task's)")
    quality_budget: float = Field(default=1.0, description="largest accepted drop of it (a "
                                  "floor in dB for an SNR)")
    budget_s: float
    elapsed_s: float
    baseline: dict[str, Any]
    candidates: list[Candidate]
    pareto: list[str] = Field(description="run ids on the accuracy/objective front")
    recommended: str | None = Field(description="the best run meeting every constraint")
    closest: str | None = Field(default=None, description="when none meets them: the run "
                                "nearest to the accuracy budget among those that fit")
    sensitivity: list[LayerSensitivity] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="techniques left out of "
                               "the search, e.g. pruning when the graph cannot be "
                               "converted to PyTorch")
    message: str = ""


def _quality(metrics: dict[str, Any], task: Task) -> float | None:
    """The task's primary metric as a score where higher is better (accuracy, AUC, mean
    cosine, SNR, or the negative MAE)."""
    summary = quality_summary({}, {**metrics, "task": task.value})
    value = summary.get("value")
    if value is None:
        return None
    return float(value) if summary["higher_is_better"] else -float(value)


def _candidate_gate(metric: PrimaryMetric, budget: float) -> Fidelity:
    """The fidelity gate of a search's candidate runs: the defaults, loosened to the
    search's own budget where that is looser (a user who accepts a 10-point drop gets
    candidates up to it as succeeded); a degraded candidate is never recommended."""
    gate = Fidelity()
    if metric.key == "accuracy":
        gate.max_accuracy_drop = max(gate.max_accuracy_drop or 0.0, budget)
    elif metric.key == "cosine_mean":
        gate.min_cosine = min(gate.min_cosine or 1.0, 1.0 - budget)
    elif metric.key == "auc":
        gate.max_auc_drop = max(gate.max_auc_drop or 0.0, budget)
    elif metric.key == "snr_db":
        gate.min_snr_db = min(gate.min_snr_db or 0.0, budget)
    return gate


def _device_memory(path: Any, device: Device | None
                   ) -> tuple[int | None, int | None, int | None]:
    """(RAM, flash, activation arena) from the device analysis, when the model can be
    analysed."""
    try:
        from tinymlaas.devices.analysis import analyze_model

        analysis = analyze_model(path, device)
    except Exception as exc:  # the analysis is optional; fall back to measured figures
        _log.info("device analysis unavailable: %s", exc)
        return None, None, None
    if analysis.fit is not None:
        return (analysis.fit.ram_needed_bytes, analysis.fit.flash_needed_bytes,
                analysis.activation_bytes)
    return analysis.ram_bytes, analysis.weight_bytes, analysis.activation_bytes


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Succeeded candidates that no other beats on both accuracy and objective."""
    done = [(c, c.accuracy, c.objective) for c in candidates
            if c.accuracy is not None and c.objective is not None]
    front = []
    for c, acc, obj in done:
        dominated = any(a >= acc and o <= obj and (a > acc or o < obj) for _, a, o in done)
        if not dominated:
            front.append((obj, c))
    return [c for _, c in sorted(front, key=lambda pair: pair[0])]


def parse_budget(text: str | float) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1h``."""
    if isinstance(text, (int, float)):
        return float(text)
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if value and value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise InvalidInputError(f"budget {text!r} is not a duration; use e.g. 90s, 10m, "
                                "1h") from None


class _Search:
    def __init__(self, svc: Any, model_ref: str, dataset_ref: str, device: str | None,
                 objective: Objective, max_drop: float, epochs: int, project: str | None,
                 on_candidate: Callable[[Candidate], None],
                 execute: Callable[[str], Run] | None = None,
                 quality_budget: str | None = None) -> None:
        self.svc = svc
        self.execute = execute or svc.execute_run
        self.model = svc.get_model(model_ref, project)
        self.dataset = svc.get_dataset(dataset_ref, project)
        self.device = svc.get_device(device, {self.model.project}) if device else None
        self.objective = objective
        try:
            self.metric, self.max_drop = resolve_quality_budget(self.dataset.task, max_drop,
                                                                quality_budget)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self.max_accuracy_drop = max_drop
        self.gate = _candidate_gate(self.metric, self.max_drop)
        self.epochs = epochs
        self.project = project
        self.on_candidate = on_candidate
        self.candidates: list[Candidate] = []
        self.baseline: dict[str, Any] = {}
        self.seen: dict[str, Candidate] = {}
        self.started = time.monotonic()
        self.space, self.skipped = self._space()
        self._keep_float: list[str] | None = None
        #: When the search's time budget ends (``time.monotonic``); set by :func:`optimize`.
        self.deadline = float("inf")

    def _space(self) -> tuple[Space, list[str]]:
        """The choices that apply to this model, decided once: an ONNX graph that cannot
        be converted to PyTorch gets no pruning, distillation, factorization or QAT (each
        of them would fail on the same operator)."""
        if self.model.kind is not ArtifactKind.onnx:
            return Space(), []
        try:
            from tinymlaas.formats.onnx_to_torch import onnx_to_torch

            onnx_to_torch(self.svc.artifact_path(self.model.artifact_sha))
        except Exception as exc:
            reason = (getattr(exc, "message", None) or str(exc)).split("; supported:")[0]
            skipped = [f"pruning, distillation, low-rank factorization, QAT — the graph "
                       f"cannot be converted to PyTorch: {reason}"]
            _log.info("skipped: %s", skipped[0])
            formats = tuple(f for f in Space().formats if f not in TORCH_FORMATS)
            techniques = tuple(t for t in Space().techniques if t not in TORCH_TECHNIQUES)
            return Space(techniques=techniques, formats=formats), skipped
        return Space(), []

    def keep_float(self) -> list[str]:
        """The nodes per-layer sensitivity says to keep in float, measured once on the
        validation half in the task's primary metric (accuracy, cosine to the float
        outputs, MAE, AUC, SNR)."""
        if self._keep_float is None:
            # at most a quarter of the time left: one static quantization per layer adds up
            # on a transformer's dozens of MatMuls
            now = time.monotonic()
            report = _sensitivity(self, split="validation", prune=False,
                                  deadline=now + max(0.0, self.deadline - now) / 4)
            self._keep_float = [s.layer for s in report
                                if s.probe == "quantize-int8" and s.advice.startswith("keep")]
        return self._keep_float

    def evaluate(self, choice: dict[str, Any]) -> Candidate | None:
        """The candidate of ``choice``, or None when its pipeline was tried before (it is
        not run again, whether it failed or not)."""
        keep = self.keep_float() if choice.get("keep_float") else None
        steps = build_steps(choice, self.model.kind, self.epochs, keep)
        signature = repr([(s.transformer, sorted(s.params.items())) for s in steps])
        if signature in self.seen:
            return None
        index = len(self.candidates)
        pipeline = Pipeline(name=f"optimize-{index}", steps=steps, fidelity=self.gate,
                            evaluation_split="validation")
        try:
            run = self.svc.create_run(pipeline, model=self.model.id, dataset=self.dataset.id,
                                      device=self.device.name if self.device else None,
                                      project=self.project)
            run = self.execute(run.id)
            candidate = self._candidate(index, run, choice)
        except Exception as exc:  # a candidate that cannot run is a failed candidate
            _log.info("candidate %d failed: %s", index, exc)
            candidate = Candidate(trial=index, run_id="", name=pipeline.name,
                                  steps=[s.transformer for s in steps], choice=choice,
                                  status="failed",
                                  error=getattr(exc, "message", None) or str(exc))
        candidate.found_after_s = time.monotonic() - self.started
        self.candidates.append(candidate)
        self.seen[signature] = candidate
        self.on_candidate(candidate)
        return candidate

    def _candidate(self, index: int, run: Run, choice: dict[str, Any]) -> Candidate:
        candidate = Candidate(trial=index, run_id=run.id, name=run.name,
                              steps=[s.transformer for s in run.steps], choice=choice,
                              status=run.status.value, error=run.error)
        if run.status.value != "succeeded" or not run.result:
            return candidate
        if not self.baseline:
            self.baseline = {k: v for k, v in run.baseline.items() if k != "outputs_sha"}
        task = self.dataset.task
        result = run.result
        quality = _quality(result, task)
        base_quality = _quality(run.baseline, task)
        ram, flash, arena = _device_memory(self.svc.artifact_path(run.output_sha),
                                           self.device) if run.output_sha else (None,) * 3
        candidate.accuracy = quality
        candidate.quality_metric = self.metric.key
        candidate.quality = quality_summary(run.baseline, {**result, "task": task.value}
                                            ).get("value")
        candidate.accuracy_drop = metric_drop(task, run.baseline, result)
        if candidate.accuracy_drop is None and self.metric.key == "accuracy" and \
                quality is not None and base_quality is not None:
            candidate.accuracy_drop = base_quality - quality
        candidate.file_bytes = result.get("file_bytes")
        candidate.latency_ms = result.get("latency_ms_p50")
        candidate.ram_bytes = ram if ram is not None else (
            int(result["peak_memory_mb"] * 2**20) if result.get("peak_memory_mb") else None)
        candidate.flash_bytes = flash if flash is not None else result.get("file_bytes")
        candidate.arena_bytes = arena if arena is not None else result.get("arena_bytes")
        candidate.macs = result.get("macs")
        candidate.parameters = result.get("parameters")
        candidate.objective = {"size": candidate.file_bytes, "latency": candidate.latency_ms,
                               "ram": candidate.ram_bytes}[self.objective]
        violations = []
        missed = budget_violation(task, run.baseline, result, self.max_drop)
        if missed:
            violations.append(missed)
        if self.device is not None:
            if candidate.flash_bytes and candidate.flash_bytes > self.device.flash_kb * 1024:
                violations.append(f"flash {human_bytes(candidate.flash_bytes)} > "
                                  f"{human_kib(self.device.flash_kb)}")
            if candidate.ram_bytes and candidate.ram_bytes > self.device.ram_kb * 1024:
                violations.append(f"RAM {human_bytes(candidate.ram_bytes)} > "
                                  f"{human_kib(self.device.ram_kb)}")
        candidate.violations = violations
        candidate.feasible = not violations and candidate.objective is not None
        return candidate


def optimize(svc: Any, model: str, dataset: str, *, device: str | None = None,
             objective: Objective = "size", max_accuracy_drop: float = 1.0,
             budget: str | float = "10m", max_trials: int | None = None, epochs: int = 3,
             project: str | None = None, seed: int = 0, sensitivity: bool = True,
             quality_budget: str | None = None,
             on_candidate: Callable[[Candidate], None] = lambda c: None,
             should_stop: Callable[[], bool] = lambda: False,
             execute: Callable[[str], Run] | None = None) -> OptimizeResult:
    """Search compression pipelines for ``model`` on ``dataset``.

    Args:
        svc: The :class:`~tinymlaas.service.Services` facade the runs go through.
        model: Model name or id.
        dataset: Dataset name or id.
        device: Catalog or custom device whose flash and RAM are hard limits.
        objective: What to minimise: ``size`` (file bytes), ``latency`` (p50 ms) or
            ``ram`` (device analysis, else measured peak memory).
        max_accuracy_drop: Largest accepted accuracy loss in points (classification).
        quality_budget: The budget in the dataset task's metric, ``METRIC=VALUE``
            (``cosine=0.01``); default: ``max_accuracy_drop`` for classification, else the
            task's default (:data:`tinymlaas.domain.quality.DEFAULT_BUDGETS`).
        budget: Wall-clock budget (seconds or ``10m``); checked between candidates.
        max_trials: Exactly this many candidate runs at most (fewer only when the budget
            runs out or the search is stopped).
        epochs: Fine-tuning epochs of the training steps.
        project: Project of the model, dataset and candidate runs.
        seed: Seed of the sampler.
        sensitivity: Compute the per-layer report when no candidate qualifies.
        on_candidate: Called with each evaluated candidate (for live output).
        should_stop: Asked before each candidate; True ends the search (a cancel).
        execute: Executes a created candidate run and returns it (default:
            ``svc.execute_run``).
    """
    import optuna

    if objective not in OBJECTIVES:
        raise InvalidInputError(f"unknown objective {objective!r}; use size, latency or ram")
    if max_trials is not None and max_trials < 1:
        raise InvalidInputError("max_trials must be at least 1")
    budget_s = parse_budget(budget)
    started = time.monotonic()
    search = _Search(svc, model, dataset, device, objective, max_accuracy_drop, epochs,
                     project, on_candidate, execute, quality_budget)
    search.deadline = started + budget_s
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed,
                                                                   n_startup_trials=4))
    seeds = search.space.seeds()
    for seed_choice in seeds:
        study.enqueue_trial(seed_choice, skip_if_exists=True)
    repeats = 0

    def finished() -> bool:
        return (max_trials is not None and len(search.candidates) >= max_trials) \
            or repeats >= MAX_REPEATS or should_stop()

    def trial_fn(trial: optuna.Trial) -> tuple[float, float]:
        nonlocal repeats
        if finished():  # never a run beyond max_trials, nor after a cancel
            trial.study.stop()
            raise optuna.TrialPruned("search finished")
        candidate = search.evaluate(suggest(trial, search.space))
        if candidate is None:  # tried before: no second run, whatever its outcome was
            repeats += 1
            raise optuna.TrialPruned("tried before")
        repeats = 0
        if candidate.accuracy is None or candidate.objective is None:
            raise optuna.TrialPruned(candidate.error or "run failed")
        trial.set_user_attr("run_id", candidate.run_id)
        return candidate.accuracy, float(candidate.objective)

    def stop_when_done(study: optuna.Study, trial: Any) -> None:
        if finished():
            study.stop()

    # Repeated choices create no run, so trials may outnumber candidates; MAX_REPEATS in a
    # row end the search (the space is exhausted), and so does this bound.
    attempts = None if max_trials is None else 5 * max_trials + len(seeds) + MAX_REPEATS
    remaining = budget_s - (time.monotonic() - started)
    if remaining > 0 and not finished():
        try:
            study.optimize(trial_fn, n_trials=attempts, timeout=remaining,
                           callbacks=[stop_when_done], catch=(Exception,))
        except Exception:  # the sampler itself failed: keep what was found
            _log.exception("the search stopped early")
    return _finish(search, started, budget_s, sensitivity, should_stop)


def _pick(feasible: list[Candidate]) -> Candidate | None:
    """The best objective, where objectives within :data:`TIE_SHARE` of it are a tie that
    the smaller quality drop wins (then the smaller objective)."""
    if not feasible:
        return None
    best = min(float(c.objective or 0.0) for c in feasible)
    tied = [c for c in feasible if float(c.objective or 0.0) <= best * (1 + TIE_SHARE)]
    return min(tied, key=lambda c: (c.accuracy_drop if c.accuracy_drop is not None
                                    else float("inf"), float(c.objective or 0.0)))


def _finish(search: _Search, started: float, budget_s: float, with_sensitivity: bool,
            should_stop: Callable[[], bool] = lambda: False) -> OptimizeResult:
    candidates = search.candidates
    front = pareto_front(candidates)
    for c in front:
        c.pareto = True
    recommended = _pick([c for c in candidates if c.feasible])
    closest = None
    report: list[LayerSensitivity] = []
    metric = search.metric
    if recommended is not None:
        drop = recommended.accuracy_drop
        message = (f"recommended {recommended.run_id} ({' → '.join(recommended.steps)}): "
                   f"{search.objective} {_show(recommended)}, {metric.label} "
                   f"{metric.format(recommended.quality)}"
                   + ("" if drop is None else f" (drop {drop:.{metric.digits}f})")
                   + " on the validation half")
        if not should_stop():
            message += _held_out(search, recommended)
    else:
        measured = [c for c in candidates if c.accuracy is not None]
        fitting = [c for c in measured if not any(v.startswith(("flash", "RAM"))
                                                  for v in c.violations)] or measured
        closest = min(fitting, key=lambda c: (-(c.accuracy or 0.0), c.objective or 0),
                      default=None)
        message = ("no candidate meets every constraint" if candidates
                   else "no candidate could be evaluated within the budget")
        if closest is not None:
            message += (f"; closest: {closest.run_id} ({'; '.join(closest.violations)})")
        if with_sensitivity and not should_stop():
            report = _sensitivity(search, split="validation")
    if search.skipped:
        message += "".join(f"; skipped: {s}" for s in search.skipped)
    return OptimizeResult(
        model=search.model.name, dataset=search.dataset.name,
        device=search.device.name if search.device else None, objective=search.objective,
        max_accuracy_drop=search.max_accuracy_drop, quality_metric=search.metric.key,
        quality_budget=search.max_drop, budget_s=budget_s,
        elapsed_s=time.monotonic() - started, baseline=search.baseline,
        candidates=candidates, pareto=[c.run_id for c in front],
        recommended=recommended.run_id if recommended else None,
        closest=closest.run_id if closest else None, sensitivity=report,
        skipped=search.skipped, message=message)


def _show(candidate: Candidate) -> str:
    value = candidate.objective
    return f"{value:,.0f} B" if isinstance(value, int) else f"{value:.4g}"


def _held_out(search: _Search, chosen: Candidate) -> str:
    """Evaluate the chosen pipeline on the held-out half (its steps are cache hits), store
    the figures in ``chosen.test`` and say them; never fails the search."""
    try:
        source = search.svc.get_run(chosen.run_id)
        pipeline = Pipeline(name=f"{source.name}-test", steps=source.pipeline.steps,
                            fidelity=search.gate, evaluation_split="holdout")
        run = search.svc.create_run(pipeline, model=search.model.id,
                                    dataset=search.dataset.id,
                                    device=search.device.name if search.device else None,
                                    project=search.project)
        run = search.execute(run.id)
    except Exception as exc:
        _log.warning("held-out evaluation failed: %s", exc)
        return f"; the held-out evaluation failed: {getattr(exc, 'message', None) or exc}"
    result = run.result or {}
    if not result:
        return f"; the held-out evaluation failed: {run.error or run.status.value}"
    task = search.dataset.task
    quality = quality_summary(run.baseline, {**result, "task": task.value}).get("value")
    drop = metric_drop(task, run.baseline, result)
    if drop is None and quality is not None and search.metric.key == "accuracy":
        base = _quality(run.baseline, task)
        drop = None if base is None else base - quality
    base_bytes, file_bytes = run.baseline.get("file_bytes"), result.get("file_bytes")
    chosen.test = {"run_id": run.id, "samples": result.get("test_samples"),
                   "quality": quality, "accuracy_drop": drop, "file_bytes": file_bytes,
                   "size_ratio": base_bytes / file_bytes if base_bytes and file_bytes
                   else None, "latency_ms": result.get("latency_ms_p50"),
                   "status": run.status.value}
    metric = search.metric
    text = (f"; on the held-out test half ({result.get('test_samples')} samples, "
            f"{run.id}): {metric.label} {metric.format(quality)}")
    if drop is not None:
        text += f" (drop {drop:.{metric.digits}f})"
    if chosen.test["size_ratio"]:
        text += f", {chosen.test['size_ratio']:.2f}x smaller than the fp32 ONNX model"
    return text


def _sensitivity(search: _Search, split: Literal["test", "validation", "holdout"] = "test",
                 prune: bool = True, deadline: float | None = None) -> list[LayerSensitivity]:
    """The per-layer report in the dataset task's primary metric, against the search's
    budget in it."""
    from tinymlaas.transformers.base import DatasetAccess

    dataset = search.dataset
    access = DatasetAccess(path=search.svc.artifact_path(dataset.artifact_sha),
                           task=dataset.task, splits=dataset.splits,
                           num_classes=dataset.num_classes)
    model = search.model
    try:
        return layer_sensitivity(search.svc.artifact_path(model.artifact_sha), model.kind,
                                 model.inputs, access, search.max_drop, split=split,
                                 prune=prune and not search.skipped, deadline=deadline)
    except Exception as exc:  # the report is advice; the search result stands without it
        _log.warning("sensitivity analysis failed: %s", exc)
        return []
