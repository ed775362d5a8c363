"""Searches over HTTP: a real search followed live, exact trial counts, cancelling, the
request's bounds, and a second user who can neither read, list nor cancel another's."""

from __future__ import annotations

import pytest
from api_support import API, assert_error_shape, wait_for
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.client import Client
from tinymlaas.domain import RunStatus
from tinymlaas.errors import ConflictError, ForbiddenError, NotFoundError
from tinymlaas.service.searches import SearchRequest

FINISHED = {RunStatus.succeeded.value, RunStatus.failed.value, RunStatus.cancelled.value}


@pytest.fixture
def searching(studio: Studio):
    """The studio; its searches are stopped when the test ends."""
    yield studio
    studio.searches.shutdown(wait=True)


def test_a_search_runs_in_the_background_and_streams_its_candidates(
        searching: Studio, alice: Client, bob: Client, alice_model, alice_data) -> None:
    created = alice.search(alice_model.name, alice_data.name, max_accuracy_drop=2.0,
                           max_trials=2, epochs=1, time_budget_s=600)
    assert created.state.value in {"queued", "running"}
    assert (created.model_id, created.dataset_id) == (alice_model.id, alice_data.id)
    assert created.max_trials == 2 and created.candidates == []

    events: list[tuple[str, object]] = []
    final = alice.follow_search(created.id, lambda name, payload: events.append((name,
                                                                                 payload)))
    candidates = [p for name, p in events if name == "candidate"]
    states = [p.state.value for name, p in events if name == "state"]
    assert final.state.value == "succeeded" and states[-1] == "succeeded"
    assert len(candidates) == 2 == len(final.candidates)
    assert [c.run_id for c in candidates] == [c.run_id for c in final.candidates]
    # Followed once it has ended, every candidate is still passed, once.
    late: list[tuple[str, object]] = []
    alice.follow_search(created.id, lambda name, payload: late.append((name, payload)))
    assert [p.run_id for name, p in late if name == "candidate"] == \
        [c.run_id for c in final.candidates]
    # Exactly two candidate runs and the held-out evaluation of the recommended one,
    # nothing left behind, all in alice's project.
    held_out = [c.test["run_id"] for c in final.candidates if c.test]
    assert len(held_out) == 1
    runs = alice.list_runs()
    assert sorted(r.id for r in runs) == sorted([c.run_id for c in final.candidates]
                                                + held_out)
    assert all(r.status.value in FINISHED for r in runs)
    # The first candidate is static int8: 2,312 bytes against 2,778 for float, 1.11 points.
    first = final.candidates[0]
    assert first.steps == ["quantize-static"] and first.status == "succeeded"
    assert first.file_bytes < final.baseline["file_bytes"]
    assert 0.0 <= first.accuracy_drop <= 2.0 and first.feasible
    assert final.recommended == min((c for c in final.candidates if c.feasible),
                                    key=lambda c: c.objective).run_id
    assert final.recommended in final.pareto
    assert final.message.startswith(f"recommended {final.recommended}")
    assert final.finished_at is not None and final.elapsed_s > 0

    listed = alice.list_searches()
    assert [s.id for s in listed] == [created.id]
    assert alice.list_searches(alice.me().default_project)[0].id == created.id
    assert alice.get_search(created.id).recommended == final.recommended
    with pytest.raises(ConflictError, match="only a queued or running search"):
        alice.cancel_search(created.id)

    # Bob sees nothing of it: not by id, not in his list, not its events, and no cancel.
    assert bob.list_searches() == []
    for attempt in (lambda: bob.get_search(created.id),
                    lambda: bob.cancel_search(created.id),
                    lambda: list(bob.search_events(created.id)),
                    lambda: bob.list_searches(alice.me().default_project)):
        with pytest.raises(NotFoundError):
            attempt()
    with pytest.raises(NotFoundError):  # nor search alice's model from his own project
        bob.search(alice_model.id, alice_data.id, max_trials=1)
    assert alice.get_search(created.id).state.value == "succeeded"


def test_cancelling_a_running_search_stops_its_candidate_run(
        searching: Studio, alice: Client, alice_model, alice_data) -> None:
    created = alice.search(alice_model.id, alice_data.id, max_trials=50, epochs=1)
    wait_for(lambda: alice.get_search(created.id).state.value == "running")
    asked = alice.cancel_search(created.id)
    assert asked.cancel_requested
    wait_for(lambda: alice.get_search(created.id).state.value == "cancelled", 300)
    ended = alice.get_search(created.id)
    assert ended.message.startswith(f"cancelled after {len(ended.candidates)} candidate(s)")
    assert len(ended.candidates) < 50
    runs = alice.list_runs()  # every run it made is a candidate, and none is still going
    assert sorted(r.id for r in runs) == sorted(c.run_id for c in ended.candidates)
    assert all(r.status.value in FINISHED for r in runs)
    with pytest.raises(ConflictError):
        alice.cancel_search(created.id)


def test_a_queued_search_is_cancelled_at_once_and_its_stream_ends(
        studio: Studio, alice: Client, bob: Client, alice_model, alice_data) -> None:
    user = studio.accounts.store.find_user("alice@example.com")[0]
    # Recorded but not started: it waits in the queue.
    queued = studio.accounts.workspace(user).create_search(
        SearchRequest(model=alice_model.name, dataset=alice_data.name, max_trials=1))
    assert alice.get_search(queued.id).state.value == "queued"
    cancelled = alice.cancel_search(queued.id)
    assert cancelled.state.value == "cancelled"
    assert cancelled.message == "cancelled before it started"
    names = [name for name, _ in alice.search_events(queued.id)]
    assert names == ["search", "search", "end"]
    assert alice.list_runs() == []
    # A viewer of the project may read the search but not start or cancel one.
    alice.share_project(user.default_project, "bob@example.com", "viewer")
    assert bob.get_search(queued.id).id == queued.id
    with pytest.raises(ForbiddenError):
        bob.search(alice_model.id, alice_data.id, project=user.default_project)


@pytest.mark.parametrize("change", [
    {"objective": "speed"}, {"objective": ["size", "ram"]}, {"max_trials": 0},
    {"max_trials": 201}, {"max_trials": 2.5}, {"max_trials": "3"}, {"max_trials": True},
    {"time_budget_s": 0}, {"time_budget_s": -5}, {"time_budget_s": 1e9},
    {"time_budget_s": "10m"}, {"max_accuracy_drop": -0.5}, {"max_accuracy_drop": 101},
    {"max_accuracy_drop": "1"}, {"epochs": 0}, {"seed": -1}, {"model": ""},
    {"dataset": None}, {"budget": 1.0}, {"device": "x" * 101},
])
def test_bad_requests_are_422(http: TestClient, alice: Client, change: dict) -> None:
    body = {"model": "m", "dataset": "d", **change}
    response = http.post(f"{API}/searches", json=body,
                         headers={"Authorization": f"Bearer {alice.token}"})
    assert response.status_code == 422, response.text
    assert_error_shape(response.json(), "validation_error")


def test_unknown_references_are_404(searching: Studio, alice: Client, alice_model,
                                    alice_data) -> None:
    with pytest.raises(NotFoundError, match="model 'nope' not found"):
        alice.search("nope", alice_data.id)
    with pytest.raises(NotFoundError, match="unknown device 'nope-board'"):
        alice.search(alice_model.id, alice_data.id, device="nope-board")
    with pytest.raises(NotFoundError, match="search 'search-0000000000' not found"):
        alice.get_search("search-0000000000")
    assert alice.list_searches() == []
