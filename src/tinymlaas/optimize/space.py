"""The search space of ``optimize``: which pipelines, and with which parameters.

A candidate is a structural technique (none, structured pruning, distillation, low-rank
factorization) followed by a numeric format: int8 static PTQ (per-channel or not, with or
without the most sensitive layers kept in float), int8 dynamic (per-channel, reduced
range), ``auto-int8``, int8 QAT, fp16 or fp32. Models given as ONNX skip ``export-onnx``.
The structural techniques and QAT train in PyTorch; an ONNX graph that cannot be converted
to PyTorch gets the ONNX-native choices only (:func:`space_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinymlaas.domain import ArtifactKind, PipelineStep

__all__ = ["FORMATS", "ONNX_SEEDS", "SEEDS", "TECHNIQUES", "TORCH_FORMATS",
           "TORCH_TECHNIQUES", "Space", "build_steps", "suggest"]

TECHNIQUES = ("none", "prune", "distill", "lowrank")
FORMATS = ("int8", "dynamic", "auto", "qat", "fp16", "fp32")
#: What trains in PyTorch (an ONNX input is converted by ``formats.onnx_to_torch``).
TORCH_TECHNIQUES = ("prune", "distill", "lowrank")
TORCH_FORMATS = ("qat",)

#: Tried first, in this order: cheap, usually good starting points.
SEEDS: list[dict[str, Any]] = [
    {"technique": "none", "format": "int8", "per_channel": True, "keep_float": False},
    {"technique": "prune", "format": "int8", "per_channel": True, "keep_float": False,
     "prune_ratio": 0.5},
    {"technique": "distill", "format": "int8", "per_channel": True, "keep_float": False,
     "width": 0.5},
]
#: The first choices of a graph that stays in ONNX: the graph-aware default, then dynamic
#: per-channel int8 (what transformers take best), then static int8.
ONNX_SEEDS: list[dict[str, Any]] = [
    {"technique": "none", "format": "auto"},
    {"technique": "none", "format": "dynamic", "per_channel": True, "reduce_range": False},
    {"technique": "none", "format": "int8", "per_channel": True, "keep_float": False},
]


@dataclass
class Space:
    """The choices one search samples from, decided once before it starts."""

    techniques: tuple[str, ...] = TECHNIQUES
    formats: tuple[str, ...] = FORMATS
    #: Node names that per-layer sensitivity says to keep in float (``keep_float``).
    keep_float: list[str] = field(default_factory=list)

    def seeds(self) -> list[dict[str, Any]]:
        """The seed choices this space can take."""
        seeds = SEEDS if "prune" in self.techniques else ONNX_SEEDS
        return [s for s in seeds if s["technique"] in self.techniques
                and s["format"] in self.formats]


def suggest(trial: Any, space: Space | None = None) -> dict[str, Any]:
    """Sample one candidate's choices from an optuna trial."""
    space = space or Space()
    choice: dict[str, Any] = {
        "technique": trial.suggest_categorical("technique", space.techniques),
        "format": trial.suggest_categorical("format", space.formats)}
    if choice["technique"] == "prune":
        choice["prune_ratio"] = trial.suggest_float("prune_ratio", 0.2, 0.85)
    elif choice["technique"] == "distill":
        choice["width"] = trial.suggest_float("width", 0.25, 0.8)
    elif choice["technique"] == "lowrank":
        choice["rank_ratio"] = trial.suggest_float("rank_ratio", 0.05, 0.6)
    if choice["format"] == "int8":
        choice["per_channel"] = trial.suggest_categorical("per_channel", (True, False))
        choice["keep_float"] = trial.suggest_categorical("keep_float", (False, True))
    elif choice["format"] == "dynamic":
        choice["per_channel"] = trial.suggest_categorical("per_channel", (True, False))
        choice["reduce_range"] = trial.suggest_categorical("reduce_range", (False, True))
    return choice


def build_steps(choice: dict[str, Any], model_kind: ArtifactKind, epochs: int,
                keep_float: list[str] | None = None) -> list[PipelineStep]:
    """The pipeline of one candidate; ``keep_float`` are the node names a static int8
    choice with ``keep_float`` leaves in float."""
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
        params: dict[str, Any] = {"per_channel": bool(choice.get("per_channel", True))}
        # only an unchanged graph has the node names the sensitivity probes found
        if choice.get("keep_float") and keep_float and technique == "none":
            params["nodes_to_exclude"] = sorted(keep_float)
        steps.append(PipelineStep(transformer="quantize-static", params=params))
    elif fmt == "dynamic":
        steps.append(PipelineStep(transformer="quantize-dynamic", params={
            "per_channel": bool(choice.get("per_channel", True)),
            "reduce_range": bool(choice.get("reduce_range", False))}))
    elif fmt == "auto":
        steps.append(PipelineStep(transformer="auto-int8", params={}))
    elif fmt == "fp16":
        steps.append(PipelineStep(transformer="fp16", params={}))
    if not steps:
        steps.append(PipelineStep(transformer="fuse", params={}))
    return steps
