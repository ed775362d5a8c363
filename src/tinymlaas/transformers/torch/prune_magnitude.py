"""``prune-magnitude``: unstructured magnitude pruning (zeroed weights) with fine-tuning.

Masks are applied after every optimiser step, so pruned weights stay zero. The saved model
is dense; the metrics give the sparsity and what the weights take in sparse encodings
(CSR, bitmask, zlib), which is what a sparse-aware runtime or a compressed flash image pays.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import fx, nn

from tinymlaas.errors import InvalidInputError
from tinymlaas.transformers.base import StepContext, Transformer
from tinymlaas.transformers.torch.training import (
    TrainingData,
    TrainingStep,
    TrainParams,
    fine_tune,
    prunable_layers,
)

__all__ = ["MaskSet", "PruneMagnitude", "PruneMagnitudeParams", "sparsity_metrics"]


class MaskSet:
    """Binary masks on layer weights, re-applied after each optimiser step."""

    def __init__(self, layers: dict[str, Any], masks: dict[str, torch.Tensor]) -> None:
        self.layers = layers
        self.masks = masks
        self.apply()

    def apply(self) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                self.layers[name].weight.mul_(mask)


def selected_layers(model: fx.GraphModule, keep_layers: list[str],
                    include_output: bool = True) -> dict[str, Any]:
    layers = prunable_layers(model)
    unknown = set(keep_layers) - set(layers)
    if unknown:
        raise InvalidInputError(f"unknown layer(s) {sorted(unknown)}; layers: "
                                f"{', '.join(layers)}")
    return {n: m for n, m in layers.items() if n not in keep_layers}


def _csr_bytes(weight: np.ndarray, value_bytes: int) -> int:
    matrix = weight.reshape(weight.shape[0], -1)
    nnz = int(np.count_nonzero(matrix))
    index_bytes = 2 if matrix.shape[1] < 65536 else 4
    return nnz * (value_bytes + index_bytes) + (matrix.shape[0] + 1) * 4


def sparsity_metrics(layers: dict[str, Any]) -> dict[str, Any]:
    """Sparsity and encoded sizes of the given layers' weights (fp32 and int8 values)."""
    per_layer: dict[str, float] = {}
    total = zeros = dense = csr = bitmask = compressed = csr_int8 = bitmask_int8 = 0
    for name, layer in layers.items():
        w = layer.weight.detach().cpu().numpy().astype(np.float32)
        n, z = w.size, int(w.size - np.count_nonzero(w))
        nnz = n - z
        per_layer[name] = round(z / n, 4)
        total, zeros = total + n, zeros + z
        dense += w.nbytes
        csr += _csr_bytes(w, 4)
        csr_int8 += _csr_bytes(w, 1)
        bitmask += nnz * 4 + (n + 7) // 8
        bitmask_int8 += nnz + (n + 7) // 8
        compressed += len(zlib.compress(w.tobytes(), 9))
    return {"sparsity": round(zeros / max(1, total), 4), "layer_sparsity": per_layer,
            "pruned_weights": total, "dense_weight_bytes": dense, "csr_weight_bytes": csr,
            "bitmask_weight_bytes": bitmask, "zlib_weight_bytes": compressed,
            "csr_int8_weight_bytes": csr_int8, "bitmask_int8_weight_bytes": bitmask_int8,
            "compression_ratio": round(dense / max(1, min(csr, bitmask, compressed)), 3)}


class PruneMagnitudeParams(TrainParams):
    sparsity: float = Field(default=0.7, gt=0, lt=1, description="Fraction of the weights "
                            "set to zero.")
    scope: Literal["global", "layer"] = Field(default="global", description="Rank weights "
                                              "across all layers or within each layer.")
    keep_layers: list[str] = Field(default_factory=list, description="Layers left dense.")
    steps: int = Field(default=3, ge=1, le=100, description="Reach the sparsity in this many "
                       "increasing steps during fine-tuning (gradual pruning).")


def magnitude_masks(layers: dict[str, Any], sparsity: float,
                    scope: str) -> dict[str, torch.Tensor]:
    """Masks keeping the largest-magnitude ``1 - sparsity`` of the weights."""
    if scope == "global":
        scores = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
        k = int(sparsity * len(scores))
        threshold = scores.kthvalue(k).values if k > 0 else scores.min() - 1
        return {n: (m.weight.detach().abs() > threshold).float() for n, m in layers.items()}
    masks = {}
    for name, layer in layers.items():
        scores = layer.weight.detach().abs().flatten()
        k = int(sparsity * len(scores))
        threshold = scores.kthvalue(k).values if k > 0 else scores.min() - 1
        masks[name] = (layer.weight.detach().abs() > threshold).float()
    return masks


class PruneMagnitude(TrainingStep, Transformer):
    name = "prune-magnitude"
    version = "1"
    summary = "Zero the smallest weights (unstructured sparsity), fine-tuning with the masks."
    Params = PruneMagnitudeParams

    def transform(self, ctx: StepContext, model: fx.GraphModule, data: TrainingData,
                  shape: list[int]) -> tuple[nn.Module, dict[str, Any]]:
        params: PruneMagnitudeParams = ctx.params
        layers = selected_layers(model, params.keep_layers)
        steps = min(params.steps, max(1, params.epochs))
        epochs = [params.epochs // steps + (1 if i < params.epochs % steps else 0)
                  for i in range(steps)]
        for i, count in enumerate(epochs):
            target = params.sparsity * (i + 1) / steps
            masks = MaskSet(layers, magnitude_masks(layers, target, params.scope))
            span = (0.1 + 0.8 * i / steps, 0.1 + 0.8 * (i + 1) / steps)
            fine_tune(model, data, params.model_copy(update={"epochs": count,
                                                             "seed": params.seed + i}),
                      ctx, after_step=masks.apply, span=span,
                      label=f"sparsity {target:.2f}")
        masks.apply()
        return model, sparsity_metrics(layers)
