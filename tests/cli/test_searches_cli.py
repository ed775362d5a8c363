"""``tinymlaas optimize`` runs a recorded search in this process; ``tinymlaas searches``
lists, shows and cancels them; bad flags exit 2 before anything is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain.searches import SearchState
from tinymlaas.service.searches import Searches, SearchRequest


@pytest.fixture
def tiny(cli, tmp_path: Path):
    code, _, err = cli("models", "add", write_digits_onnx(tmp_path / "logreg.onnx"),
                       "--name", "logreg")
    assert code == 0, err
    assert cli("datasets", "add", "digits")[0] == 0
    return cli


def test_optimize_records_a_search_with_exactly_max_trials_runs(tiny, services) -> None:
    code, out, err = tiny("optimize", "--model", "logreg", "--dataset", "digits",
                          "--max-trials", "2", "--epochs", "1", "--max-accuracy-drop", "2",
                          "--budget", "10m", "--json")
    assert code == 0, err
    search = json.loads(out)
    assert search["state"] == "succeeded" and search["max_trials"] == 2
    assert search["time_budget_s"] == 600 and search["epochs"] == 1
    runs = services.list_runs()
    # two candidate runs and the held-out evaluation of the recommended one
    held_out = [c["test"]["run_id"] for c in search["candidates"] if c.get("test")]
    assert len(held_out) == 1
    assert sorted(r.id for r in runs) == sorted([c["run_id"] for c in search["candidates"]]
                                                + held_out)
    assert len(runs) == 3
    assert search["recommended"] == search["candidates"][0]["run_id"]
    assert search["candidates"][0]["steps"] == ["quantize-static"]

    code, out, _ = tiny("searches", "list", "--json")
    assert [s["id"] for s in json.loads(out)] == [search["id"]]
    code, out, _ = tiny("searches", "list")
    assert search["id"] in out and "succeeded" in out and "2/2" in out
    code, out, _ = tiny("searches", "show", search["id"])
    assert code == 0 and search["recommended"] in out and "★" in out
    code, _, err = tiny("searches", "cancel", search["id"])
    assert code == 4 and "only a queued or running search" in err
    code, _, err = tiny("searches", "show", "search-0000000000")
    assert code == 3 and "not found" in err


def test_the_table_and_progress_lines(tiny) -> None:
    code, out, err = tiny("optimize", "--model", "logreg", "--dataset", "digits",
                          "--max-trials", "1", "--epochs", "1", "--max-accuracy-drop", "0")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("search search-") and "1 candidate(s)" in lines[0]
    assert "quantize-static: succeeded" in out
    assert "no candidate meets every constraint; closest:" in out
    assert "Per-layer sensitivity" in out


def test_a_cancelled_queued_search(tiny, services) -> None:
    searches = Searches(services)
    queued = searches.create(SearchRequest(model="logreg", dataset="digits", max_trials=1))
    code, out, err = tiny("searches", "cancel", queued.id)
    assert code == 0, err
    assert f"search {queued.id}: cancelled" in out
    assert searches.get(queued.id).state is SearchState.cancelled
    assert services.list_runs() == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-trials", "0"], "max_trials"), (["--max-trials", "201"], "max_trials"),
    (["--objective", "speed"], "objective"), (["--budget", "soon"], "not a duration"),
    (["--budget", "0"], "time_budget_s"), (["--max-accuracy-drop", "-1"], "max_accuracy_drop"),
    (["--epochs", "0"], "epochs"),
])
def test_bad_flags_exit_2_and_record_nothing(tiny, services, flags, message) -> None:
    code, _, err = tiny("optimize", "--model", "logreg", "--dataset", "digits", *flags)
    assert code == 2, err
    assert message in err
    assert Searches(services).list() == [] and services.list_runs() == []


def test_unknown_model_exits_3(tiny) -> None:
    code, _, err = tiny("optimize", "--model", "nope", "--dataset", "digits")
    assert code == 3 and "model 'nope' not found" in err


def test_a_search_whose_optimize_stopped_lists_as_failed(tiny, services) -> None:
    import socket

    searches = Searches(services)
    left = searches.create(SearchRequest(model="logreg", dataset="digits", max_trials=1))
    searches.store.claim(left.id, f"{socket.gethostname()[:150]}:999999999:1")
    code, out, err = tiny("searches", "list", "--json")
    assert code == 0, err
    listed = json.loads(out)[0]
    assert listed["state"] == "failed" and listed["error"].startswith("interrupted")
