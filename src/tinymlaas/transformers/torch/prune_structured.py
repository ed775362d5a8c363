"""``prune-structured``: remove whole channels and neurons (torch-pruning), then fine-tune.

The result has fewer channels, not masks: its parameters, MACs and latency really drop.
The channel ratio is searched (bisection) so that the parameter or MAC count falls by at
least ``ratio``; layers that produce the model output keep their width.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import fx, nn

from tinymlaas.errors import InvalidInputError, UnsupportedModelError
from tinymlaas.transformers.base import StepContext, Transformer
from tinymlaas.transformers.torch.training import (
    TrainingData,
    TrainingStep,
    TrainParams,
    count_macs,
    count_parameters,
    fine_tune,
    output_layers,
    prunable_layers,
)

__all__ = ["PruneStructured", "PruneStructuredParams", "channel_prune", "prunable_widths"]


class PruneStructuredParams(TrainParams):
    ratio: float = Field(default=0.5, gt=0, lt=1, description="Fraction of the parameters "
                         "(or MACs) to remove.")
    target: Literal["parameters", "macs"] = Field(default="parameters",
                                                   description="What `ratio` applies to.")
    importance: Literal["l1", "l2", "random"] = Field(
        default="l2", description="Channel importance: weight-norm (l1, l2) or random.")
    global_pruning: bool = Field(default=False, description="Rank channels across layers "
                                 "(uneven widths) instead of the same ratio per layer.")
    keep_layers: list[str] = Field(default_factory=list, description="Layer names whose "
                                   "output channels must stay (the output layer always does).")
    layer_ratios: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description="Per-layer channel ratios overriding the searched "
        "one, each in [0, 1).")
    round_to: int | None = Field(default=None, ge=1, le=64, description="Keep channel counts "
                                 "multiples of this (SIMD-friendly).")


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "random":
        return tp.importance.RandomImportance()
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


def _width(layer: nn.Module) -> int:
    if isinstance(layer, nn.modules.conv._ConvNd):
        return int(layer.out_channels)
    return int(layer.out_features) if isinstance(layer, nn.Linear) else 0


def _ratio_cap(width: int, round_to: int | None) -> float:
    """The largest channel ratio that leaves ``width`` at least one channel (or ``round_to``
    channels): torch-pruning floors the kept count, and a layer it would empty (or round
    down to zero) is silently left whole."""
    keep = round_to or 1
    return max(0.0, 1 - (keep + 1e-6) / width) if width > keep else 0.0


def prunable_widths(model: fx.GraphModule, *, keep_layers: list[str] | None = None,
                    round_to: int | None = None) -> dict[str, tuple[int, float]]:
    """Each layer that may lose channels: its width and the largest ratio it can take.

    The output layers and ``keep_layers`` are left out; so are layers already at their
    minimum width (one channel, or ``round_to``).
    """
    layers = prunable_layers(model)
    ignored = {id(m) for m in output_layers(model)} | \
        {id(layers[n]) for n in keep_layers or [] if n in layers}
    found: dict[str, tuple[int, float]] = {}
    for name, layer in layers.items():
        if id(layer) in ignored:
            continue
        cap = _ratio_cap(_width(layer), round_to)
        if cap > 0:
            found[name] = (_width(layer), cap)
    return found


def channel_prune(model: fx.GraphModule, shape: list[int], channel_ratio: float, *,
                  importance: str = "l2", global_pruning: bool = False,
                  keep_layers: list[str] | None = None,
                  layer_ratios: dict[str, float] | None = None,
                  round_to: int | None = None) -> fx.GraphModule:
    """Remove ``channel_ratio`` of the channels of every prunable layer (in place).

    Each layer's ratio is capped so that it keeps at least one channel (``round_to``
    channels when set): a small layer loses what it can instead of nothing.
    """
    import torch_pruning as tp

    layers = prunable_layers(model)
    unknown = set(keep_layers or []) | set(layer_ratios or {})
    unknown -= set(layers)
    if unknown:
        raise InvalidInputError(f"unknown layer(s) {sorted(unknown)}; prunable layers: "
                                f"{', '.join(layers)}")
    ignored = output_layers(model) + [layers[n] for n in keep_layers or []]
    caps = {name: cap for name, (_, cap) in
            prunable_widths(model, keep_layers=keep_layers, round_to=round_to).items()}
    ratios = dict(layer_ratios or {})
    if global_pruning:
        # One ranking across layers: the ratio is capped by the narrowest layer.
        channel_ratio = min([channel_ratio, *caps.values()])
    else:
        # Each layer is its own scope: cap each one by its own width.
        ratios = {name: ratios.get(name, channel_ratio) for name in caps} | ratios
    ratios = {name: min(r, caps.get(name, 0.0)) for name, r in ratios.items()}
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, torch.zeros(1, *shape), importance=_importance(importance),
            pruning_ratio=channel_ratio, global_pruning=global_pruning,
            ignored_layers=ignored, round_to=round_to,
            pruning_ratio_dict={layers[n]: r for n, r in ratios.items()} or None)
        pruner.step()
    except Exception as exc:
        raise UnsupportedModelError(f"channel pruning failed on this graph: "
                                    f"{str(exc).strip().splitlines()[0][:300]}") from exc
    return model


def _search(model: fx.GraphModule, shape: list[int], params: PruneStructuredParams,
            ctx: StepContext) -> tuple[fx.GraphModule, float]:
    """The smallest channel ratio whose pruned copy meets the reduction target."""
    measure = count_parameters if params.target == "parameters" else \
        (lambda m: count_macs(m, shape))
    base = measure(model)
    goal = base * (1 - params.ratio)
    layers = prunable_layers(model)
    unknown = (set(params.keep_layers) | set(params.layer_ratios)) - set(layers)
    if unknown:
        raise InvalidInputError(f"unknown layer(s) {sorted(unknown)}; prunable layers: "
                                f"{', '.join(layers)}")
    if not prunable_widths(model, keep_layers=params.keep_layers, round_to=params.round_to):
        raise InvalidInputError(_nothing_to_prune(model, params))

    def attempt(channel_ratio: float) -> fx.GraphModule:
        return channel_prune(copy.deepcopy(model), shape, channel_ratio,
                             importance=params.importance,
                             global_pruning=params.global_pruning,
                             keep_layers=params.keep_layers,
                             layer_ratios=params.layer_ratios, round_to=params.round_to)

    low, high = 0.0, 0.95
    best = attempt(high)
    reached = measure(best)
    if reached >= base:
        raise InvalidInputError(f"prune-structured cannot remove any {params.target} from "
                                f"this model: {_nothing_to_prune(model, params)}")
    if reached > goal:
        ctx.log.warning("even at %.2f of the channels the target is not met (%s %d -> %d)",
                        high, params.target, base, reached)
        return best, high
    best_ratio = high
    for _ in range(10):
        mid = (low + high) / 2
        candidate = attempt(mid)
        if measure(candidate) <= goal:
            best, best_ratio, high = candidate, mid, mid
        else:
            low = mid
    return best, best_ratio


def _nothing_to_prune(model: fx.GraphModule, params: PruneStructuredParams) -> str:
    """Why no layer can lose a channel: each layer, its width and why it stays."""
    outputs = {id(m) for m in output_layers(model)}
    minimum = params.round_to or 1
    reasons = []
    for name, layer in prunable_layers(model).items():
        if id(layer) in outputs:
            why = "produces the model output"
        elif name in params.keep_layers:
            why = "listed in keep_layers"
        elif _ratio_cap(_width(layer), params.round_to) <= 0:
            why = (f"already at its minimum of {minimum} channel(s)"
                   + (" (round_to)" if params.round_to else ""))
        else:
            why = "tied to a layer that must keep its width"
        reasons.append(f"{name} ({_width(layer)}: {why})")
    return ("no layer can lose a channel; " + "; ".join(reasons)
            + ". Lower round_to, keep fewer layers, or use prune-magnitude for sparsity.")


class PruneStructured(TrainingStep, Transformer):
    name = "prune-structured"
    version = "1"
    summary = ("Remove channels/neurons (torch-pruning) to cut parameters or MACs by a ratio, "
               "then fine-tune on the train split.")
    Params = PruneStructuredParams

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        params: PruneStructuredParams = ctx.params
        ctx.progress(0.05, "searching the channel ratio")
        pruned, channel_ratio = _search(model, shape, params, ctx)
        ctx.log.info("channel ratio %.3f", channel_ratio)
        losses = fine_tune(pruned, data, params, ctx, span=(0.1, 0.9))
        widths = {name: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd)
                         else m.out_features) for name, m in prunable_layers(pruned).items()}
        return pruned, {"channel_ratio": round(channel_ratio, 4), "layer_widths": widths,
                        "final_loss": losses[-1] if losses else None}
