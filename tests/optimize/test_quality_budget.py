"""``optimize`` budgets in the dataset task's own metric: a cosine budget on an embedding
model, never the 1-point accuracy budget applied to a cosine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import linear_embedding, linear_onnx
from tinymlaas.domain import Task
from tinymlaas.errors import InvalidInputError
from tinymlaas.optimize import optimize
from tinymlaas.service.searches import Searches, parse_request


@pytest.fixture
def embedding(services, tmp_path: Path):
    """A linear 32 -> 16 'embedding' model and an unlabelled dataset for it."""
    return linear_embedding(services, tmp_path, 160, seed=5)


def test_a_cosine_budget_judges_embedding_candidates(services, embedding) -> None:
    model, dataset = embedding
    result = optimize(services, model.name, dataset.name, quality_budget="cosine=0.01",
                      budget="5m", max_trials=1, epochs=1, sensitivity=False)
    (c,) = result.candidates
    assert c.status == "succeeded", c.error
    assert result.quality_metric == "cosine_mean" and result.quality_budget == 0.01
    cosine = services.get_run(c.run_id).result["cosine_mean"]
    assert c.quality_metric == "cosine_mean" and c.quality == pytest.approx(cosine)
    assert c.accuracy_drop == pytest.approx(1.0 - cosine)
    assert 1.0 - cosine < 0.01 and c.feasible and result.recommended == c.run_id
    assert "mean cosine" in result.message
    # the same run judged against a budget it misses: not recommended, the drop is said
    strict = optimize(services, model.name, dataset.name, quality_budget="cosine=0.0000001",
                      budget="5m", max_trials=1, epochs=1, sensitivity=False)
    (s,) = strict.candidates
    assert s.run_id != c.run_id and s.quality == pytest.approx(cosine)
    assert strict.recommended is None and not s.feasible
    assert s.violations == [f"mean cosine drop {1.0 - cosine:.4f} > 0.0000"]


def test_the_accuracy_budget_is_never_applied_to_a_cosine(services, embedding,
                                                          registered) -> None:
    model, dataset = embedding
    # a 50-point "accuracy" budget is ignored on an embedding dataset: its default cosine
    # budget (0.01) applies
    result = optimize(services, model.name, dataset.name, max_accuracy_drop=50.0,
                      budget="5m", max_trials=1, epochs=1, sensitivity=False)
    assert (result.quality_metric, result.quality_budget) == ("cosine_mean", 0.01)
    with pytest.raises(InvalidInputError, match="a budget in cosine does not apply to this "
                                                "dataset: its task is classification"):
        optimize(services, registered[0].name, registered[1].name,
                 quality_budget="cosine=0.01", max_trials=1)
    with pytest.raises(InvalidInputError, match="a budget in accuracy does not apply"):
        Searches(services).create(parse_request({"model": model.name,
                                                 "dataset": dataset.name,
                                                 "quality_budget": "accuracy=1"}))
    with pytest.raises(InvalidInputError, match="METRIC=VALUE"):
        parse_request({"model": "m", "dataset": "d", "quality_budget": "speed=2"})


def test_optimize_cli_takes_a_cosine_budget(cli, services, embedding) -> None:
    model, dataset = embedding
    code, out, err = cli("optimize", "--model", model.name, "--dataset", dataset.name,
                         "--budget", "5m", "--budget", "cosine=0.01", "--max-trials", "1",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["quality_budget"] == "cosine=0.01"
    (c,) = data["candidates"]
    assert c["quality_metric"] == "cosine_mean" and data["recommended"] == c["run_id"]
    code, out, err = cli("optimize", "--model", model.name, "--dataset", dataset.name,
                         "--budget", "cosine=0.01", "--max-trials", "1")
    assert code == 0, err
    assert "quality budget cosine=0.01" in out and "mean cosine 0.99" in out
    code, _, err = cli("optimize", "--model", model.name, "--dataset", dataset.name,
                       "--budget", "accuracy=1", "--max-trials", "1")
    assert code == 2 and "its task is embedding" in err


def test_a_search_keeps_its_quality_budget_on_both_databases(tmp_path: Path,
                                                             database_url: str) -> None:
    from tinymlaas.config import Settings
    from tinymlaas.service import Services

    svc = Services(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        svc.add_model(linear_onnx(tmp_path / "e.onnx", 8, 4), "embed")
        X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
        np.savez(tmp_path / "e.npz", X=X, y=np.zeros(len(X), np.float32))
        svc.add_dataset(str(tmp_path / "e.npz"), "sentences", task=Task.embedding)
        searches = Searches(svc)
        made = searches.create(parse_request({"model": "embed", "dataset": "sentences",
                                              "quality_budget": "Cosine = 0.02"}))
        assert made.quality_budget == "cosine=0.02"
        assert searches.get(made.id).quality_budget == "cosine=0.02"
    finally:
        svc.close()
