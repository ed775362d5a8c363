"""Each task's metrics against numpy computations, and the fidelity gate's verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from tinymlaas.domain import Fidelity, Task
from tinymlaas.domain.quality import (
    budget_violation,
    fidelity_verdict,
    parse_quality_budget,
    primary_metric,
    quality_summary,
    resolve_quality_budget,
)
from tinymlaas.evaluation.evaluate import SNR_CAP_DB, quality_metrics, token_mask


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
                     for x, y in zip(a, b, strict=True)])


def test_embedding_metrics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 16))
    out = ref + rng.normal(scale=0.3, size=ref.shape)
    m = quality_metrics(Task.embedding, out.astype(np.float32), np.zeros(50), ref)
    cos = _cosines(out.astype(np.float32).astype(np.float64), ref)
    assert m["cosine_mean"] == pytest.approx(cos.mean(), abs=1e-6)
    assert m["cosine_min"] == pytest.approx(cos.min(), abs=1e-6)
    assert m["cosine_p5"] == pytest.approx(np.percentile(cos, 5), abs=1e-6)
    assert m["cosine_to_original"] == m["cosine_mean"]
    assert m["cosine_min"] <= m["cosine_p5"] <= m["cosine_mean"] < 1.0
    err = out.astype(np.float32).astype(np.float64) - ref
    assert m["max_abs_error"] == pytest.approx(np.abs(err).max(), rel=1e-9)
    assert m["snr_db"] == pytest.approx(10 * np.log10(np.mean(ref ** 2) / np.mean(err ** 2)),
                                        rel=1e-9)
    # noise at 0.3 of a unit signal: about 10.5 dB
    assert 9.5 < m["snr_db"] < 11.5


def test_per_token_outputs_are_compared_on_real_tokens_only() -> None:
    """A text model's per-token output (samples x sequence x hidden) holds values at the
    padding positions that nothing reads: they are left out of the fidelity."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 12, size=20)
    mask = (np.arange(12)[None, :] < lengths[:, None]).astype(np.int64)
    ref = rng.normal(size=(20, 12, 8))
    out = ref + rng.normal(scale=0.05, size=ref.shape)
    out[mask == 0] = rng.normal(scale=5.0, size=(int((mask == 0).sum()), 8))  # padding: noise
    X = np.zeros(20, dtype=[("input_ids", "<i8", (12,)), ("attention_mask", "<i8", (12,))])
    X["attention_mask"] = mask
    assert np.array_equal(token_mask(X), mask)
    masked = quality_metrics(Task.embedding, out, np.zeros(20), ref, token_mask(X))
    real = [_cosines(out[i, :n].reshape(1, -1), ref[i, :n].reshape(1, -1))[0]
            for i, n in enumerate(lengths)]
    assert masked["cosine_mean"] == pytest.approx(np.mean(real), abs=1e-9)
    assert masked["cosine_min"] > 0.99
    err = (out - ref)[mask == 1]
    assert masked["max_abs_error"] == pytest.approx(np.abs(err).max(), rel=1e-9)
    everything = quality_metrics(Task.embedding, out, np.zeros(20), ref)
    assert everything["cosine_min"] < 0.9 and everything["snr_db"] < masked["snr_db"] - 10
    # pooled outputs (samples x hidden) and a plain X are compared whole
    assert token_mask(np.zeros((20, 12))) is None
    pooled = quality_metrics(Task.embedding, out[:, 0], np.zeros(20), ref[:, 0],
                             token_mask(X))
    assert pooled["cosine_mean"] == pytest.approx(_cosines(out[:, 0], ref[:, 0]).mean())


def test_regression_and_generic_metrics() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    pred = (y + rng.normal(scale=0.5, size=40)).reshape(40, 1)
    m = quality_metrics(Task.regression, pred, y, None)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred[:, 0] - y)), rel=1e-9)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred[:, 0] - y) ** 2)), rel=1e-9)
    assert m["mse"] == pytest.approx(m["rmse"] ** 2, rel=1e-9)
    same = rng.normal(size=(8, 3, 4)).astype(np.float32)
    g = quality_metrics(Task.generic, same, np.zeros(8), same.copy())
    assert g["snr_db"] == SNR_CAP_DB and g["max_abs_error"] == 0.0
    assert "accuracy" not in g and "mae" not in g


def test_classification_keeps_accuracy_and_agreement() -> None:
    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    m = quality_metrics(Task.classification, logits, np.array([0, 1, 2, 0, 0]), logits)
    assert m["accuracy"] == pytest.approx(80.0)
    assert m["top1_agreement"] == 100.0 and "cosine_mean" not in m


def test_primary_metrics_and_summaries() -> None:
    assert primary_metric("embedding").key == "cosine_mean"
    assert primary_metric(Task.regression).higher_is_better is False
    s = quality_summary({"task": "embedding"}, {"task": "embedding", "cosine_mean": 0.97})
    assert s["label"] == "mean cosine" and s["text"] == "0.9700"
    assert s["change"] == pytest.approx(-0.03) and s["drop"] == pytest.approx(0.03)
    s = quality_summary({"accuracy": 98.0}, {"accuracy": 96.5})  # inferred: classification
    assert s["text"] == "96.50%" and s["change"] == pytest.approx(-1.5)
    s = quality_summary({"task": "regression", "mae": 0.2}, {"task": "regression", "mae": 0.25})
    assert s["drop"] == pytest.approx(0.05) and s["change"] == pytest.approx(0.05)


def test_fidelity_gate_defaults_and_overrides() -> None:
    # classification: more than 5 points lost is degraded, 5 is not
    assert fidelity_verdict("classification", {"accuracy": 90.0}, {"accuracy": 85.0}) is None
    verdict = fidelity_verdict("classification", {"accuracy": 90.0}, {"accuracy": 84.0})
    assert verdict is not None and verdict.value == pytest.approx(6.0)
    assert verdict.threshold == 5.0 and "6.00 points" in verdict.message
    assert fidelity_verdict("classification", {"accuracy": 90.0}, {"accuracy": 84.0},
                            Fidelity(max_accuracy_drop=10)) is None
    assert fidelity_verdict("classification", {"accuracy": 90.0}, {"accuracy": 50.0},
                            Fidelity(max_accuracy_drop=None)) is None
    # embedding: a mean cosine under 0.95 (the case of a broken static int8: 0.34)
    broken = {"cosine_mean": 0.34, "cosine_min": 0.05}
    verdict = fidelity_verdict("embedding", {}, broken)
    assert verdict is not None and verdict.metric == "cosine_mean"
    assert "0.3400" in verdict.message and "min 0.0500" in verdict.message
    assert fidelity_verdict("embedding", {}, {"cosine_mean": 0.96}) is None
    assert fidelity_verdict("embedding", {}, {"cosine_mean": float("nan")}) is not None
    assert fidelity_verdict("generic", {}, {"snr_db": 12.0}) is not None
    assert fidelity_verdict("regression", {"mae": 1.0}, {"mae": 5.0}) is None  # off by default
    assert fidelity_verdict("regression", {"mae": 1.0}, {"mae": 1.2},
                            Fidelity(max_mae_increase_pct=10)) is not None
    with pytest.raises(ValueError):
        Fidelity.model_validate({"min_cosine": 2})
    with pytest.raises(ValueError):
        Fidelity.model_validate({"max_cosine": 0.9})


def test_quality_budgets_are_in_the_tasks_metric() -> None:
    assert parse_quality_budget("cosine=0.01") == ("cosine", 0.01)
    for bad in ("cosine", "speed=1", "cosine=x", "cosine=-1"):
        with pytest.raises(ValueError):
            parse_quality_budget(bad)
    metric, value = resolve_quality_budget("embedding", 1.0, None)
    assert (metric.key, value) == ("cosine_mean", 0.01)  # never the 1-point accuracy budget
    metric, value = resolve_quality_budget("classification", 2.5, None)
    assert (metric.key, value) == ("accuracy", 2.5)
    with pytest.raises(ValueError, match="does not apply to this dataset: its task is "
                                         "classification"):
        resolve_quality_budget("classification", 1.0, "cosine=0.01")
    with pytest.raises(ValueError, match="no default quality budget"):
        resolve_quality_budget("regression", 1.0, None)
    assert budget_violation("embedding", {}, {"cosine_mean": 0.98}, 0.01) is not None
    assert budget_violation("embedding", {}, {"cosine_mean": 0.995}, 0.01) is None
    assert budget_violation("generic", {}, {"snr_db": 25.0}, 30.0) == "SNR 25.0 dB < 30 dB"
