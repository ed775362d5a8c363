"""Per-layer sensitivity: how much of the task's metric each layer loses when compressed
alone (accuracy points, mean cosine, MAE, AUC or output SNR).

Two probes on the original model, without fine-tuning: quantize one layer at a time to
int8 (everything else stays float), and remove half of one layer's channels at a time. The
layers that lose the most are the ones to keep in float (``nodes_to_exclude`` of
``quantize-static``) or to prune less (``keep_layers`` / ``layer_ratios`` of
``prune-structured``).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tinymlaas.domain import ArtifactKind, Task, TensorSpec
from tinymlaas.domain.quality import PrimaryMetric, primary_metric
from tinymlaas.domain.searches import LayerSensitivity
from tinymlaas.transformers.base import DatasetAccess, StepContext

__all__ = ["LayerSensitivity", "layer_sensitivity"]

_QUANTIZABLE = {"Conv", "Gemm", "MatMul"}
Split = Literal["test", "validation", "holdout"]


#: An SNR budget is a floor: a layer that alone uses half the error amplitude it allows
#: (6 dB above the floor) is one to keep in float.
_HALF_AMPLITUDE_DB = 6.02


@dataclass(frozen=True)
class _Scorer:
    """How a probe's outputs are scored: the task's primary metric on the split (accuracy
    in points, MAE, AUC against the labels; mean cosine and output SNR against the float
    model's own outputs, so a cosine drop is in the unit of a cosine budget)."""

    metric: PrimaryMetric
    task: Task
    y: np.ndarray
    reference: np.ndarray
    mask: np.ndarray | None

    def __call__(self, outputs: np.ndarray) -> float | None:
        from tinymlaas.evaluation.evaluate import quality_metrics

        value = quality_metrics(self.task, outputs, self.y, self.reference, self.mask).get(
            self.metric.key)
        return None if value is None else float(value)

    def judge(self, baseline: float, value: float, budget: float, probe: str
              ) -> tuple[float | None, bool]:
        """The drop of ``value`` against the float model's ``baseline`` (none for an SNR),
        and whether the layer is sensitive: a quantized layer that alone uses more than
        half the ``budget`` (an SNR: within 6 dB of its floor), a pruned one more than all
        of it."""
        quantized = probe == "quantize-int8"
        if self.metric.key == "snr_db":
            return None, value < budget + (_HALF_AMPLITUDE_DB if quantized else 0.0)
        drop = self.metric.drop(baseline, value)
        return drop, drop is not None and drop > (budget / 2 if quantized else budget)


def _onnx_outputs(path: Path, X: np.ndarray) -> np.ndarray:
    from tinymlaas.evaluation.runtime import OnnxRunner

    return OnnxRunner(path).predict(X)


def _to_onnx(path: Path, kind: ArtifactKind, specs: list[TensorSpec], work: Path) -> Path:
    if kind is ArtifactKind.onnx:
        return path
    from tinymlaas.transformers.torch.export_onnx import ExportOnnx, ExportParams

    ctx = StepContext(input_path=path, input_kind=kind, params=ExportParams(), out_dir=work,
                      work_dir=work, input_specs=specs)
    return ExportOnnx().run(ctx).path


def _quantize_probes(source: Path, dataset: DatasetAccess, baseline: float, budget: float,
                     work: Path, split: Split, score: _Scorer,
                     deadline: float | None = None) -> list[LayerSensitivity]:
    import onnx

    from tinymlaas.transformers.onnx.quantize import QuantizeStatic, StaticParams

    X, _ = dataset.split(split)
    nodes = [n.name for n in onnx.load(str(source)).graph.node if n.op_type in _QUANTIZABLE]
    found: list[LayerSensitivity] = []
    for name in nodes:
        if deadline is not None and time.monotonic() > deadline:
            logging.getLogger("tinymlaas.optimize").info(
                "quantize probes stopped after %d of %d layers: out of time", len(found),
                len(nodes))
            break
        out = work / f"q-{len(found)}"
        out.mkdir()
        params = StaticParams(nodes_to_exclude=[n for n in nodes if n != name],
                              num_samples=128)
        ctx = StepContext(input_path=source, input_kind=ArtifactKind.onnx, params=params,
                          out_dir=out, work_dir=out, dataset=dataset)
        value = score(_onnx_outputs(QuantizeStatic().run(ctx).path, X))
        if value is None:
            continue
        drop, sensitive = score.judge(baseline, value, budget, "quantize-int8")
        found.append(LayerSensitivity(
            layer=name, probe="quantize-int8", metric=score.metric.key, value=value,
            drop=drop, advice="keep in float (quantize-static nodes_to_exclude)" if sensitive
            else "safe to quantize"))
    return found


def _prune_probes(path: Path, kind: ArtifactKind, specs: list[TensorSpec],
                  dataset: DatasetAccess, baseline: float,
                  budget: float, split: Split, score: _Scorer) -> list[LayerSensitivity]:
    import torch

    from tinymlaas.transformers.torch.prune_structured import channel_prune
    from tinymlaas.transformers.torch.training import (
        load_trainable,
        output_layers,
        prunable_layers,
        sample_shape,
    )

    model = load_trainable(path, kind)
    shape = sample_shape(specs, path, kind)
    X_test, _ = dataset.split(split)
    X = torch.from_numpy(np.ascontiguousarray(X_test.reshape(len(X_test), *shape)))
    outputs = output_layers(model)
    found = []
    for name, layer in prunable_layers(model).items():
        if any(layer is o for o in outputs):
            continue
        pruned = channel_prune(copy.deepcopy(model), shape, 0.0, layer_ratios={name: 0.5})
        with torch.no_grad():
            value = score(pruned(X).numpy())
        if value is None:
            continue
        drop, sensitive = score.judge(baseline, value, budget, "prune-50%")
        found.append(LayerSensitivity(
            layer=name, probe="prune-50%", metric=score.metric.key, value=value, drop=drop,
            advice="prune less (prune-structured keep_layers / layer_ratios)" if sensitive
            else "tolerates pruning"))
    return found


def layer_sensitivity(path: Path, kind: ArtifactKind, specs: list[TensorSpec],
                      dataset: DatasetAccess, max_accuracy_drop: float,
                      split: Split = "test", prune: bool = True,
                      deadline: float | None = None) -> list[LayerSensitivity]:
    """Both probes on the model at ``path``, most sensitive layers first, measured in the
    dataset task's primary metric (accuracy points, mean cosine to the float outputs, MAE,
    AUC, output SNR) on the ``split`` (``optimize`` uses its validation half, never the
    held-out one). ``max_accuracy_drop`` is the search's budget in that metric (for the
    SNR, its floor in dB). ``prune=False`` leaves the pruning probes out; past ``deadline``
    (``time.monotonic``) no further layer is probed, and the report holds the layers probed
    so far.

    Probes that do not apply to the model (e.g. pruning a graph that cannot be converted
    to PyTorch) are left out rather than failing the report; a task whose metric the split
    cannot give (an AUC without both classes) has no report.
    """
    from tinymlaas.errors import TinymlaasError
    from tinymlaas.evaluation.evaluate import token_mask

    X, y = dataset.split(split)
    found: list[LayerSensitivity] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = _to_onnx(path, kind, specs, work)
        reference = _onnx_outputs(source, X)
        score = _Scorer(primary_metric(dataset.task), dataset.task, y, reference,
                        token_mask(X))
        baseline = score(reference)
        if baseline is None:
            return []
        found += _quantize_probes(source, dataset, baseline, max_accuracy_drop, work, split,
                                  score, deadline)
        try:
            if prune:
                found += _prune_probes(path, kind, specs, dataset, baseline,
                                       max_accuracy_drop, split, score)
        except TinymlaasError as exc:  # e.g. a graph that cannot be converted to PyTorch
            logging.getLogger("tinymlaas.optimize").info("pruning probes skipped: %s", exc)
    if score.metric.key == "snr_db":  # the lowest SNR first
        return sorted(found, key=lambda s: s.value)
    return sorted(found, key=lambda s: -(s.drop or 0.0))
