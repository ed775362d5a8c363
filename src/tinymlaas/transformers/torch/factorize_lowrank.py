"""``factorize-lowrank``: SVD factorization of linear and convolution layers, then fine-tune.

A linear layer ``W (out x in)`` becomes ``in -> r -> out``; a ``k x k`` convolution
becomes a ``k x k`` convolution to ``r`` channels followed by a ``1 x 1`` convolution to
the original outputs. Layers producing the model output stay as they are unless
``include_output``. The rank keeps ``energy`` of the squared singular values, or is
``rank_ratio`` of the full rank; a layer is only factorized when that saves parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import fx, nn

from tinymlaas.transformers.base import StepContext, Transformer
from tinymlaas.transformers.torch.prune_magnitude import selected_layers
from tinymlaas.transformers.torch.training import (
    TrainingData,
    TrainingStep,
    TrainParams,
    fine_tune,
    output_layers,
)

__all__ = ["FactorizeLowRank", "FactorizeParams", "choose_rank", "factorize_layer"]


class FactorizeParams(TrainParams):
    energy: float = Field(default=0.9, gt=0, le=1, description="Share of the squared singular "
                          "values each factorized layer keeps (ignored with rank_ratio).")
    rank_ratio: float | None = Field(default=None, gt=0, le=1, description="Rank as a share "
                                     "of the full rank, instead of the energy rule.")
    include_convs: bool = Field(default=True, description="Factorize convolutions too.")
    keep_layers: list[str] = Field(default_factory=list, description="Layers left as they are.")
    include_output: bool = Field(default=False, description="Factorize the layers producing "
                                 "the model output too (a narrow bottleneck before the "
                                 "classes costs accuracy).")
    min_saving: float = Field(default=0.1, ge=0, lt=1, description="Only factorize a layer "
                              "when it saves at least this share of its weights.")


def choose_rank(singular: torch.Tensor, energy: float, rank_ratio: float | None) -> int:
    full = len(singular)
    if rank_ratio is not None:
        return max(1, math.ceil(rank_ratio * full))
    cumulative = torch.cumsum(singular ** 2, 0) / torch.sum(singular ** 2)
    return min(full, int(torch.searchsorted(cumulative, torch.tensor(energy)).item()) + 1)


def factorize_layer(layer: Any, rank: int) -> nn.Sequential:
    """Two layers whose product is the rank-``rank`` SVD approximation of ``layer``."""
    weight = layer.weight.detach()
    matrix = weight.reshape(weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    first_w = root[:, None] * vh[:rank]
    second_w = u[:, :rank] * root[None, :]
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first: Any
        second: Any
        first, second = nn.Linear(layer.in_features, rank, bias=False), \
            nn.Linear(rank, layer.out_features, bias=bias)
    else:
        cls = type(layer)
        first = cls(layer.in_channels, rank, layer.kernel_size, stride=layer.stride,
                    padding=layer.padding, dilation=layer.dilation, bias=False,
                    padding_mode=layer.padding_mode)
        second = cls(rank, layer.out_channels, 1, bias=bias)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if bias:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


class FactorizeLowRank(TrainingStep, Transformer):
    name = "factorize-lowrank"
    version = "1"
    summary = "SVD low-rank factorization of Linear and Conv layers, then fine-tuning."
    Params = FactorizeParams

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        params: FactorizeParams = ctx.params
        ranks: dict[str, dict[str, int]] = {}
        outputs = output_layers(model)
        for name, layer in selected_layers(model, params.keep_layers).items():
            if any(layer is o for o in outputs) and not params.include_output:
                continue
            if not isinstance(layer, nn.Linear) and (not params.include_convs or
                                                     layer.groups != 1):
                continue
            matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            out_dim, in_dim = matrix.shape
            rank = choose_rank(torch.linalg.svdvals(matrix), params.energy, params.rank_ratio)
            before, after = out_dim * in_dim, rank * (out_dim + in_dim)
            if after > before * (1 - params.min_saving):
                continue
            model.add_submodule(name, factorize_layer(layer, rank))
            ranks[name] = {"rank": rank, "full_rank": min(out_dim, in_dim),
                           "weights_before": before, "weights_after": after}
        model.recompile()
        ctx.log.info("ranks: %s", ranks)
        fine_tune(model, data, params, ctx, span=(0.1, 0.9))
        return model, {"ranks": ranks, "factorized_layers": len(ranks)}
