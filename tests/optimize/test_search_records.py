"""Search records on SQLite and PostgreSQL: one process takes a queued search, cancelling
marks it, a search whose process stopped is recovered, project deletion takes them along;
and the request's bounds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.config import Settings
from tinymlaas.domain import Device
from tinymlaas.domain.searches import SearchState
from tinymlaas.errors import ConflictError, InvalidInputError, NotFoundError
from tinymlaas.service import Services
from tinymlaas.service.searches import INTERRUPTED, Searches, SearchRequest, parse_request


@pytest.fixture
def searches(tmp_path: Path, database_url: str):
    svc = Services(Settings(home=tmp_path / "home", database_url=database_url))
    svc.meta.ensure_project("proj-a")
    svc.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg", project="proj-a")
    svc.add_dataset("digits", project="proj-a")
    yield Searches(svc)
    svc.close()


def _request(**changes) -> SearchRequest:
    return SearchRequest(model="logreg", dataset="digits", max_trials=3, **changes)


def test_one_process_takes_a_queued_search_and_cancel_marks_it(searches: Searches) -> None:
    search = searches.create(_request(seed=2**32 - 1), "proj-a")
    assert (search.state, search.seed, search.model_name) == (SearchState.queued,
                                                               2**32 - 1, "logreg")
    assert searches.store.claim(search.id, "host:1:1")
    assert not searches.store.claim(search.id, "host:2:2")
    running = searches.get(search.id)
    assert running.state is SearchState.running and running.started_at is not None
    asked = searches.cancel(search.id)
    assert asked.state is SearchState.running and asked.cancel_requested
    assert searches.store.is_cancel_requested(search.id)
    with pytest.raises(ConflictError, match="only a queued search can be started"):
        searches.run(search.id)

    queued = searches.create(_request(), "proj-a")
    cancelled = searches.cancel(queued.id)
    assert cancelled.state is SearchState.cancelled and cancelled.finished_at is not None
    with pytest.raises(ConflictError, match="is cancelled"):
        searches.cancel(queued.id)
    assert [s.id for s in searches.list({"proj-a"})] == [queued.id, search.id]
    assert searches.list({"proj-b"}) == [] and searches.list(set()) == []
    with pytest.raises(NotFoundError):
        searches.get(search.id, {"proj-b"})


def test_a_search_whose_process_stopped_is_failed_on_recovery(searches: Searches) -> None:
    here = socket.gethostname()[:150]
    dead, elsewhere, cancelled = (searches.create(_request(), "proj-a") for _ in range(3))
    searches.store.claim(dead.id, f"{here}:999999999:1")
    searches.store.claim(elsewhere.id, "another-host:1:1")
    searches.cancel(cancelled.id)
    assert searches.recover() == {"interrupted": [dead.id], "started": []}
    ended = searches.get(dead.id)
    assert ended.state is SearchState.failed and ended.error == INTERRUPTED
    assert searches.get(elsewhere.id).state is SearchState.running


def test_project_deletion_takes_its_searches(searches: Searches) -> None:
    search = searches.create(_request(), "proj-a")
    searches.services.delete_project("proj-a")
    with pytest.raises(NotFoundError):
        searches.get(search.id)


def test_devices_and_inputs_resolve_in_the_search_project_only(searches: Searches) -> None:
    svc = searches.services
    svc.meta.ensure_project("proj-b")
    svc.add_device(Device(name="b-board", arch="cortex-m4", clock_mhz=64, ram_kb=64,
                          flash_kb=256, project="proj-b"))
    with pytest.raises(NotFoundError, match="unknown device 'b-board'"):
        searches.create(_request(device="b-board"), "proj-a")
    with pytest.raises(NotFoundError, match="model 'logreg' not found"):
        searches.create(_request(), "proj-b")
    assert searches.create(_request(device="stm32f746-discovery"), "proj-a").device == \
        "stm32f746-discovery"


@pytest.mark.parametrize(("change", "message"), [
    ({"max_trials": 0}, "max_trials"), ({"max_trials": 201}, "max_trials"),
    ({"objective": "speed"}, "objective"), ({"time_budget_s": 0}, "time_budget_s"),
    ({"max_accuracy_drop": 100.5}, "max_accuracy_drop"), ({"epochs": 101}, "epochs"),
    ({"seed": -1}, "seed"), ({"budget": 3}, "budget"),
])
def test_requests_out_of_bounds_are_refused(change: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"invalid search: {message}"):
        parse_request({"model": "m", "dataset": "d", **change})
