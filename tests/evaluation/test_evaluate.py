"""Evaluation: the same metrics for every artifact, checked against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import linear_onnx
from tinymlaas.domain import ArtifactKind, Task, TensorSpec
from tinymlaas.errors import InvalidInputError
from tinymlaas.evaluation.evaluate import evaluate_model, quality_metrics
from tinymlaas.evaluation.runtime import fit_to_input
from tinymlaas.evaluation.static import count_macs, graph_stats

CNN_MACS = (32 * 8 * 8 * 1 * 9) + (64 * 8 * 8 * 32 * 9) + 1024 * 128 + 128 * 10
CNN_PARAMS = (32 * 9 + 32) + (64 * 32 * 9 + 64) + (1024 * 128 + 128) + (128 * 10 + 10)


def test_static_stats_of_the_cnn(digits_onnx: Path) -> None:
    stats = graph_stats(onnx.load(str(digits_onnx)))
    assert stats.macs == CNN_MACS
    assert stats.parameters == CNN_PARAMS  # BatchNorm folded into the convolutions
    assert stats.weight_bytes >= CNN_PARAMS * 4


def test_linear_macs(tmp_path: Path) -> None:
    model = onnx.load(str(linear_onnx(tmp_path / "m.onnx", features=64, classes=10)))
    assert count_macs(model) == 640


def test_onnx_and_torch_agree(digits_cnn, digits_onnx, digits_access) -> None:
    X, y = digits_access.split("test")
    spec = [TensorSpec(name="x", shape=["N", 1, 8, 8], dtype="float32")]
    torch_metrics, torch_out = evaluate_model(digits_cnn[0], ArtifactKind.torch_exported,
                                              Task.classification, X, y, inputs=spec,
                                              latency_runs=30)
    onnx_metrics, _ = evaluate_model(digits_onnx, ArtifactKind.onnx, Task.classification, X, y,
                                     reference=torch_out, latency_runs=30)
    assert torch_metrics["accuracy"] == pytest.approx(digits_cnn[1])
    assert onnx_metrics["accuracy"] == pytest.approx(torch_metrics["accuracy"])
    assert onnx_metrics["top1_agreement"] == 100.0 and onnx_metrics["max_abs_diff"] < 1e-3
    assert torch_metrics["macs"] == onnx_metrics["macs"] == CNN_MACS
    assert onnx_metrics["parameters"] == CNN_PARAMS
    assert torch_metrics["parameters"] == CNN_PARAMS + 2 * (32 + 64)  # BatchNorm scale, shift
    for metrics in (torch_metrics, onnx_metrics):
        assert 0 < metrics["latency_ms_p50"] <= metrics["latency_ms_p95"]
        assert metrics["latency_runs"] >= 20 and metrics["test_samples"] == len(X)
        assert metrics["peak_memory_mb"] >= 0
        assert metrics["file_bytes"] > 500_000


def test_quality_metrics_per_task() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    metrics = quality_metrics(Task.classification, logits, y, reference=logits[:, ::-1].copy())
    assert metrics["accuracy"] == 75.0 and metrics["top1_agreement"] == 0.0
    assert metrics["max_abs_diff"] == 3.0
    reg = quality_metrics(Task.regression, np.array([[1.0], [3.0]]), np.array([1.0, 1.0]), None)
    assert reg["mse"] == 2.0
    scores = np.array([[0.1, 0.1], [0.2, 0.0], [0.9, 0.8], [0.7, 0.9]])
    anomaly = quality_metrics(Task.anomaly, scores, np.array([0, 0, 1, 1]), None)
    assert anomaly["auc"] == 1.0
    emb = quality_metrics(Task.embedding, np.array([[1.0, 0.0]]), np.array([0]),
                          reference=np.array([[1.0, 1.0]]))
    assert emb["cosine_to_original"] == pytest.approx(2 ** -0.5)


def test_fit_to_input() -> None:
    X = np.zeros((5, 1, 8, 8), np.float32)
    assert fit_to_input(X, ["N", 64]).shape == (5, 64)
    assert fit_to_input(X, ["N", 8, 8, 1]).shape == (5, 8, 8, 1)
    assert fit_to_input(np.zeros((2, 3, 4, 4)), ["N", 4, 4, 3]).shape == (2, 4, 4, 3)
    with pytest.raises(InvalidInputError, match="needs 10 values per sample"):
        fit_to_input(X, ["N", 10])
