"""Per-layer sensitivity: how much accuracy each layer loses when compressed alone.

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
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from tinymlaas.domain import ArtifactKind, Task, TensorSpec
from tinymlaas.domain.searches import LayerSensitivity
from tinymlaas.transformers.base import DatasetAccess, StepContext

__all__ = ["LayerSensitivity", "layer_sensitivity"]

_QUANTIZABLE = {"Conv", "Gemm", "MatMul"}
Split = Literal["test", "validation", "holdout"]


def _quality(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == y) * 100.0)


def _scorer(task: Task, y: np.ndarray, reference: np.ndarray) -> Callable[[np.ndarray], float]:
    """How a probe's outputs are scored: accuracy in points for classification; for an
    embedding, the mean cosine to the float model's own outputs (1.0 for the model itself),
    so a drop is in the unit of a cosine budget."""
    if task is not Task.embedding:
        return lambda outputs: _quality(outputs, y)
    ref = reference.reshape(len(reference), -1).astype(np.float64)

    def cosine(outputs: np.ndarray) -> float:
        out = outputs.reshape(len(outputs), -1).astype(np.float64)
        norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
        return float(np.mean(np.sum(out * ref, axis=1) / np.maximum(norms, 1e-12)))

    return cosine


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
                     work: Path, split: Split, score: Callable[[np.ndarray], float],
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
        accuracy = score(_onnx_outputs(QuantizeStatic().run(ctx).path, X))
        drop = baseline - accuracy
        found.append(LayerSensitivity(
            layer=name, probe="quantize-int8", accuracy=accuracy, drop=drop,
            advice="keep in float (quantize-static nodes_to_exclude)" if drop > budget / 2
            else "safe to quantize"))
    return found


def _prune_probes(path: Path, kind: ArtifactKind, specs: list[TensorSpec],
                  dataset: DatasetAccess, baseline: float,
                  budget: float, split: Split, score: Callable[[np.ndarray], float]
                  ) -> list[LayerSensitivity]:
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
            accuracy = score(pruned(X).numpy())
        drop = baseline - accuracy
        found.append(LayerSensitivity(
            layer=name, probe="prune-50%", accuracy=accuracy, drop=drop,
            advice="prune less (prune-structured keep_layers / layer_ratios)"
            if drop > budget else "tolerates pruning"))
    return found


def layer_sensitivity(path: Path, kind: ArtifactKind, specs: list[TensorSpec],
                      dataset: DatasetAccess, max_accuracy_drop: float,
                      split: Split = "test", prune: bool = True,
                      deadline: float | None = None) -> list[LayerSensitivity]:
    """Both probes on the model at ``path``, most sensitive layers first, measured on the
    dataset's task (accuracy in points; for an embedding, the mean cosine to the float
    outputs) on the
    ``split`` (``optimize`` uses its validation half, never the held-out one);
    ``prune=False`` leaves the pruning probes out; past ``deadline`` (``time.monotonic``)
    no further layer is probed, and the report holds the layers probed so far.

    Probes that do not apply to the model (e.g. pruning a graph that cannot be converted
    to PyTorch) are left out rather than failing the report.
    """
    from tinymlaas.errors import TinymlaasError

    X, y = dataset.split(split)
    found: list[LayerSensitivity] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = _to_onnx(path, kind, specs, work)
        reference = _onnx_outputs(source, X)
        score = _scorer(dataset.task, y, reference)
        baseline = score(reference)
        found += _quantize_probes(source, dataset, baseline, max_accuracy_drop, work, split,
                                  score, deadline)
        try:
            if prune:
                found += _prune_probes(path, kind, specs, dataset, baseline,
                                       max_accuracy_drop, split, score)
        except TinymlaasError as exc:  # e.g. a graph that cannot be converted to PyTorch
            logging.getLogger("tinymlaas.optimize").info("pruning probes skipped: %s", exc)
    return sorted(found, key=lambda s: -s.drop)
