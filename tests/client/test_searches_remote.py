"""Searches against a real server: ``tinymlaas --server ... optimize`` creates the search
there and follows its events, every flag reaching the server as given; ``searches
list|show|cancel`` and the SDK's methods do the same as locally."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client


@pytest.fixture
def remote(live: LiveServer, sdk: Client, monkeypatch: pytest.MonkeyPatch, cli,
           tiny_onnx: Path):
    """The ``cli`` fixture against the server, with the tiny model and digits there."""
    sdk.upload_model(tiny_onnx, name="logreg")
    sdk.add_builtin_dataset("digits")
    monkeypatch.setenv("TINYMLAAS_SERVER", live.url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", sdk.create_token("cli").token)
    from tinymlaas.config import get_settings

    get_settings.cache_clear()
    yield cli
    get_settings.cache_clear()


def test_optimize_against_a_server(remote, sdk: Client, settings) -> None:
    code, out, err = remote("optimize", "--model", "logreg", "--dataset", "digits",
                            "--max-trials", "2", "--epochs", "1", "--max-accuracy-drop", "2",
                            "--budget", "90s", "--seed", "7", "--objective", "latency",
                            "--json")
    assert code == 0, err
    search = json.loads(out)
    stored = sdk.get_search(search["id"])
    assert (stored.max_trials, stored.epochs, stored.max_accuracy_drop, stored.time_budget_s,
            stored.seed, stored.objective) == (2, 1, 2.0, 90.0, 7, "latency")
    assert stored.state.value == "succeeded" == search["state"]
    assert [c["run_id"] for c in search["candidates"]] == [c.run_id for c in stored.candidates]
    held_out = [c.test["run_id"] for c in stored.candidates if c.test]  # the recommended's
    assert sorted(r.id for r in sdk.list_runs()) == sorted(
        [c.run_id for c in stored.candidates] + held_out)
    assert len(stored.candidates) == 2
    assert stored.candidates[0].objective == stored.candidates[0].latency_ms
    assert not (settings.home / "tinymlaas.db").exists()  # the server did the work

    code, out, err = remote("optimize", "--model", "logreg", "--dataset", "digits",
                            "--max-trials", "1", "--epochs", "1")
    assert code == 0, err
    assert "on the server" in out and "quantize-static: succeeded" in out
    assert "search succeeded" in out

    code, out, _ = remote("searches", "list", "--json")
    assert len(json.loads(out)) == 2 and json.loads(out)[1]["id"] == search["id"]
    code, out, _ = remote("searches", "show", search["id"], "--json")
    assert json.loads(out)["recommended"] == stored.recommended
    code, _, err = remote("searches", "cancel", search["id"])
    assert code == 4 and "only a queued or running search" in err
    code, _, err = remote("optimize", "--model", "logreg", "--dataset", "digits",
                          "--max-trials", "0")
    assert code == 2 and "max_trials" in err


def test_cancel_through_the_cli_and_the_sdk_follow(remote, sdk: Client) -> None:
    started = sdk.search("logreg", "digits", max_trials=50, epochs=1)
    deadline = time.monotonic() + 120
    while sdk.get_search(started.id).state.value != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, out, err = remote("searches", "cancel", started.id)
    assert code == 0, err
    assert "cancelling" in out or "cancelled" in out
    names: list[str] = []
    ended = sdk.follow_search(started.id, lambda name, _: names.append(name))
    assert ended.state.value == "cancelled"
    assert set(names) <= {"candidate", "state"}
    # a cancelled search evaluates nothing on the held-out half
    assert sorted(r.id for r in sdk.list_runs()) == sorted(c.run_id for c in ended.candidates)
    assert all(r.status.value in {"succeeded", "failed", "cancelled"} for r in sdk.list_runs())


def test_an_unreachable_server_exits_7(cli) -> None:
    code, _, err = cli("--server", "http://127.0.0.1:9", "--token", "tmls_x", "optimize",
                       "--model", "m", "--dataset", "d", "--max-trials", "1")
    assert code == 7 and "cannot reach the tinymlaas server at http://127.0.0.1:9" in err
    code, _, err = cli("--server", "http://127.0.0.1:9", "--token", "tmls_x", "searches",
                       "list")
    assert code == 7
