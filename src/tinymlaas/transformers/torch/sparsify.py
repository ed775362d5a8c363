"""``sparsify``: N:M semi-structured sparsity (e.g. 2:4) with fine-tuning.

In every group of ``m`` consecutive weights along a layer's input dimension, only the
``n`` largest stay non-zero: the pattern sparse tensor cores and N:M kernels accelerate.
Layers whose input size is not a multiple of ``m`` stay dense (listed in the metrics).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import fx, nn

from tinymlaas.transformers.base import StepContext, Transformer
from tinymlaas.transformers.torch.prune_magnitude import MaskSet, selected_layers, sparsity_metrics
from tinymlaas.transformers.torch.training import TrainingData, TrainingStep, TrainParams, fine_tune

__all__ = ["Sparsify", "SparsifyParams", "n_m_mask"]


class SparsifyParams(TrainParams):
    n: int = Field(default=2, ge=1, le=32, description="Non-zeros kept per group.")
    m: int = Field(default=4, ge=2, le=64, description="Group size.")
    keep_layers: list[str] = Field(default_factory=list, description="Layers left dense.")

    @model_validator(mode="after")
    def _n_below_m(self) -> SparsifyParams:
        if self.n >= self.m:
            raise ValueError(f"n ({self.n}) must be smaller than m ({self.m})")
        return self


def n_m_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest magnitudes of each group of ``m`` along the input dimension."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    groups = rows.abs().reshape(rows.shape[0], -1, m)
    keep = groups.topk(n, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def _n_m_bytes(layers: dict[str, Any], n: int, m: int) -> int:
    """fp32 values plus ceil(log2(m)) index bits per kept value."""
    bits = max(1, (m - 1).bit_length())
    total = 0
    for layer in layers.values():
        kept = layer.weight.numel() * n // m
        total += kept * 4 + (kept * bits + 7) // 8
    return total


class Sparsify(TrainingStep, Transformer):
    name = "sparsify"
    version = "1"
    summary = "N:M semi-structured sparsity (2:4 by default), fine-tuning with the masks."
    Params = SparsifyParams

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        params: SparsifyParams = ctx.params
        candidates = selected_layers(model, params.keep_layers)
        layers = {k: v for k, v in candidates.items()
                  if v.weight[0].numel() % params.m == 0}
        dense = sorted(set(candidates) - set(layers))
        if dense:
            ctx.log.info("left dense (input size not a multiple of %d): %s", params.m, dense)
        masks = MaskSet(layers, {k: n_m_mask(v.weight, params.n, params.m)
                                 for k, v in layers.items()})
        fine_tune(model, data, params, ctx, after_step=masks.apply, span=(0.1, 0.9))
        masks.apply()
        metrics = sparsity_metrics(layers)
        metrics.update({"pattern": f"{params.n}:{params.m}", "dense_layers": dense,
                        "n_m_weight_bytes": _n_m_bytes(layers, params.n, params.m)})
        return model, metrics
