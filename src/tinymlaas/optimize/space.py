"""The search space of ``optimize``: which pipelines, and with which parameters.

A candidate is a structural technique (none, structured pruning, distillation, low-rank
factorization) followed by a numeric format (int8 static PTQ, int8 QAT, fp16, fp32).
Models given as ONNX skip ``export-onnx``.
"""

from __future__ import annotations

from typing import Any

from tinymlaas.domain import ArtifactKind, PipelineStep

__all__ = ["FORMATS", "SEEDS", "TECHNIQUES", "build_steps", "suggest"]

TECHNIQUES = ("none", "prune", "distill", "lowrank")
FORMATS = ("int8", "qat", "fp16", "fp32")

#: Tried first, in this order: cheap, usually good starting points.
SEEDS: list[dict[str, Any]] = [
    {"technique": "none", "format": "int8", "per_channel": True},
    {"technique": "prune", "format": "int8", "per_channel": True, "prune_ratio": 0.5},
    {"technique": "distill", "format": "int8", "per_channel": True, "width": 0.5},
]


def suggest(trial: Any) -> dict[str, Any]:
    """Sample one candidate's choices from an optuna trial."""
    choice: dict[str, Any] = {"technique": trial.suggest_categorical("technique", TECHNIQUES),
                              "format": trial.suggest_categorical("format", FORMATS)}
    if choice["technique"] == "prune":
        choice["prune_ratio"] = trial.suggest_float("prune_ratio", 0.2, 0.85)
    elif choice["technique"] == "distill":
        choice["width"] = trial.suggest_float("width", 0.25, 0.8)
    elif choice["technique"] == "lowrank":
        choice["rank_ratio"] = trial.suggest_float("rank_ratio", 0.05, 0.6)
    if choice["format"] == "int8":
        choice["per_channel"] = trial.suggest_categorical("per_channel", (True, False))
    return choice


def build_steps(choice: dict[str, Any], model_kind: ArtifactKind,
                epochs: int) -> list[PipelineStep]:
    """The pipeline of one candidate."""
    steps: list[PipelineStep] = []
    technique = choice["technique"]
    if technique == "prune":
        steps.append(PipelineStep(transformer="prune-structured", params={
            "ratio": round(choice["prune_ratio"], 3), "epochs": epochs}))
    elif technique == "distill":
        steps.append(PipelineStep(transformer="distill", params={
            "width": round(choice["width"], 3), "epochs": 2 * epochs}))
    elif technique == "lowrank":
        steps.append(PipelineStep(transformer="factorize-lowrank", params={
            "rank_ratio": round(choice["rank_ratio"], 3), "epochs": epochs}))
    torch_output = technique != "none" or model_kind is ArtifactKind.torch_exported
    fmt = choice["format"]
    if fmt == "qat":
        steps.append(PipelineStep(transformer="qat", params={"epochs": max(1, epochs // 2)}))
        return steps
    if torch_output:
        steps.append(PipelineStep(transformer="export-onnx", params={}))
    if fmt == "int8":
        steps.append(PipelineStep(transformer="quantize-static", params={
            "per_channel": bool(choice.get("per_channel", True))}))
    elif fmt == "fp16":
        steps.append(PipelineStep(transformer="fp16", params={}))
    if not steps:
        steps.append(PipelineStep(transformer="fuse", params={}))
    return steps
