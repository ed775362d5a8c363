"""Per-layer sensitivity is measured in the dataset task's primary metric: accuracy points,
MAE against the labels, AUC, or the output SNR against the float model (a cosine for an
embedding is in test_onnx_only_search.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import mlp_onnx
from tinymlaas.domain import Task
from tinymlaas.domain.searches import LayerSensitivity
from tinymlaas.evaluation.runtime import OnnxRunner
from tinymlaas.optimize.sensitivity import layer_sensitivity
from tinymlaas.transformers.base import DatasetAccess


def _report(services, tmp_path: Path, task: Task, outputs: int, y: np.ndarray,
            budget: float) -> tuple[list[LayerSensitivity], np.ndarray, np.ndarray, Path]:
    X = np.random.default_rng(7).normal(size=(len(y), 16)).astype(np.float32)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    model = services.add_model(mlp_onnx(tmp_path / "mlp.onnx", outputs), f"mlp-{tmp_path.name}",
                               task=task)
    dataset = services.add_dataset(str(tmp_path / "data.npz"), f"data-{tmp_path.name}",
                                   task=task)
    access = DatasetAccess(path=services.artifact_path(dataset.artifact_sha), task=task,
                           splits=dataset.splits, num_classes=dataset.num_classes)
    path = services.artifact_path(model.artifact_sha)
    report = layer_sensitivity(path, model.kind, model.inputs, access, budget,
                               split="validation", prune=False)
    Xv, yv = access.split("validation")
    return report, Xv, yv, path


def test_a_regression_report_is_in_mae(services, tmp_path: Path) -> None:
    y = np.random.default_rng(1).normal(size=(160, 1)).astype(np.float32)
    report, X, yv, path = _report(services, tmp_path, Task.regression, 1, y, 0.0)
    base_mae = float(np.mean(np.abs(OnnxRunner(path).predict(X).reshape(len(X), -1)
                                    - yv.reshape(len(yv), -1))))
    assert {s.layer for s in report} == {"fc1", "fc2"}
    for s in report:
        assert s.metric == "mae" and s.probe == "quantize-int8"
        assert s.drop == pytest.approx(s.value - base_mae, abs=1e-6)
        assert 0.0 < s.value < 10.0 and s.value != pytest.approx(base_mae, abs=1e-7)
    # the most sensitive first; with no MAE to spare, a layer that costs any is kept float
    assert [s.drop for s in report] == sorted((s.drop for s in report), reverse=True)
    assert all(s.advice.startswith("keep in float") == (s.drop > 0) for s in report)
    (tmp_path / "loose").mkdir()
    loose, *_ = _report(services, tmp_path / "loose", Task.regression, 1, y, 10.0)
    assert len(loose) == 2 and all(s.advice == "safe to quantize" for s in loose)


def test_a_generic_report_is_the_output_snr_and_an_anomaly_report_the_auc(
        services, tmp_path: Path) -> None:
    y = np.zeros(160, np.float32)
    report, *_ = _report(services, tmp_path, Task.generic, 8, y, 400.0)
    assert {s.metric for s in report} == {"snr_db"} and len(report) == 2
    assert all(s.drop is None and 0.0 < s.value < 300.0 for s in report)
    assert [s.value for s in report] == sorted(s.value for s in report)  # lowest SNR first
    assert all(s.advice.startswith("keep in float") for s in report)  # a 400 dB floor

    (tmp_path / "anomaly").mkdir()
    labels = (np.arange(160) % 4 == 0).astype(np.float32)
    report, *_ = _report(services, tmp_path / "anomaly", Task.anomaly, 16, labels, 0.05)
    assert {s.metric for s in report} == {"auc"} and len(report) == 2
    assert all(0.0 <= s.value <= 1.0 and abs(s.drop) < 0.5 for s in report)


def test_a_stored_report_of_accuracies_still_reads() -> None:
    old = LayerSensitivity.model_validate({"layer": "fc1", "probe": "quantize-int8",
                                           "accuracy": 91.5, "drop": 1.5,
                                           "advice": "keep in float"})
    assert (old.metric, old.value, old.drop) == ("accuracy", 91.5, 1.5)
