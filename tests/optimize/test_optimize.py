"""Auto-compression: a real search on the digits CNN, the Pareto logic and the CLI."""

from __future__ import annotations

import json

import pytest

from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError
from tinymlaas.optimize import Candidate, optimize, pareto_front, parse_budget


def _candidate(i: int, accuracy: float, size: int) -> Candidate:
    return Candidate(trial=i, run_id=f"run-{i}", name=f"c{i}", steps=[], choice={},
                     status="succeeded", accuracy=accuracy, objective=size)


def test_pareto_front_keeps_only_undominated() -> None:
    front = pareto_front([_candidate(0, 99.0, 100), _candidate(1, 98.0, 50),
                          _candidate(2, 97.0, 80), _candidate(3, 99.0, 120)])
    assert [c.run_id for c in front] == ["run-1", "run-0"]


def test_budget_parsing() -> None:
    assert parse_budget("10m") == 600
    assert parse_budget("90s") == 90
    assert parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45
    with pytest.raises(InvalidInputError, match="duration"):
        parse_budget("soon")


def test_search_returns_a_pareto_set_of_real_runs(services, registered) -> None:
    model, dataset = registered
    result = optimize(services, model.name, dataset.name, objective="size",
                      max_accuracy_drop=1.0, budget="10m", max_trials=3, epochs=1)
    assert len(result.candidates) == 3
    assert result.pareto
    assert all(services.get_run(c.run_id).status.value == "succeeded"
               for c in result.candidates)
    recommended = next(c for c in result.candidates if c.run_id == result.recommended)
    assert recommended.pareto and recommended.feasible
    assert recommended.accuracy_drop <= 1.0
    assert recommended.file_bytes < result.baseline["file_bytes"] / 3.5
    feasible = [c for c in result.candidates if c.feasible]
    assert recommended.objective == min(c.objective for c in feasible)
    assert result.sensitivity == []
    rows = services.compare([c.run_id for c in result.candidates])
    assert {r.run_id for r in rows} == {c.run_id for c in result.candidates}


def test_device_limits_are_hard_and_sensitivity_explains(services, registered) -> None:
    model, dataset = registered
    services.add_device(Device(name="tiny-mcu", arch="cortex-m0", clock_mhz=48, ram_kb=8,
                               flash_kb=32))
    result = optimize(services, model.name, dataset.name, device="tiny-mcu",
                      max_accuracy_drop=1.0, budget="5m", max_trials=1, epochs=1)
    assert result.recommended is None
    assert result.closest == result.candidates[0].run_id
    assert any(v.startswith("flash") for v in result.candidates[0].violations)
    probes = {s.probe for s in result.sensitivity}
    assert probes == {"quantize-int8", "prune-50%"}
    layers = {s.layer for s in result.sensitivity if s.probe == "prune-50%"}
    assert layers == {"features_0", "features_3", "head_1"}
    drops = [s.drop for s in result.sensitivity]
    assert drops == sorted(drops, reverse=True)


def test_optimize_cli_json(cli, services, registered) -> None:
    model, dataset = registered
    code, out, err = cli("optimize", "--model", model.name, "--dataset", dataset.name,
                         "--budget", "5m", "--max-trials", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["recommended"] == data["candidates"][0]["run_id"]
    assert data["pareto"] == [data["recommended"]]


def test_unknown_objective_is_rejected(services, registered) -> None:
    model, dataset = registered
    with pytest.raises(InvalidInputError, match="objective"):
        optimize(services, model.name, dataset.name, objective="speed", max_trials=1)
