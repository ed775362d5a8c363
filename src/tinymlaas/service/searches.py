"""Searches: ``optimize`` as a resource that is created, followed, listed and cancelled.

A search is recorded ``queued``, then executed by one process (``running``): the CLI in its
own process, the server in background threads. Every candidate is a real run, recorded on
the search as it finishes; at the end the search holds the Pareto set and the recommended
run, or the reason none qualified (``message``) with the closest run and a per-layer
sensitivity report.

Progress goes to ``on_event`` as :class:`~tinymlaas.engine.RunEvent` s keyed by the search
id: stage ``state`` (the search moved to ``status``), ``candidate`` (``data`` is the
candidate) and, last, ``done``.
"""

from __future__ import annotations

import builtins
import logging
import socket
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinymlaas.domain import Run, Task
from tinymlaas.domain.entities import MAX_SEED
from tinymlaas.domain.quality import parse_quality_budget, resolve_quality_budget
from tinymlaas.domain.searches import (
    MAX_SEARCH_BUDGET_S,
    MAX_SEARCH_EPOCHS,
    MAX_SEARCH_TRIALS,
    Candidate,
    Objective,
    Search,
    SearchState,
)
from tinymlaas.engine import RunEvent
from tinymlaas.engine.engine import lease_owner
from tinymlaas.errors import ConflictError, InvalidInputError, TinymlaasError
from tinymlaas.executors.procs import process_tag
from tinymlaas.service.services import DEFAULT_PROJECT, Services
from tinymlaas.store.metadata import new_id
from tinymlaas.store.searches import SearchStore

__all__ = ["CANDIDATE", "DONE", "STATE", "SearchRequest", "Searches", "parse_request"]

log = logging.getLogger("tinymlaas.searches")
#: Stages of a search's events (``done`` is also the last stage of a run's events).
STATE, CANDIDATE, DONE = "state", "candidate", "done"
#: Seconds between checks for a cancel while a candidate run executes.
CANCEL_POLL_S = 1.0
INTERRUPTED = "interrupted: the process running the search stopped; start a new search"


class SearchRequest(BaseModel):
    """What to search: the same choices as ``tinymlaas optimize``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=100, description="Model name or id.")
    dataset: str = Field(min_length=1, max_length=100, description="Dataset name or id.")
    device: str | None = Field(default=None, min_length=1, max_length=100,
                               description="Target device: its flash and RAM are hard "
                                           "limits.")
    objective: Objective = Field(default="size", description="What to minimise besides "
                                 "the accuracy loss: size, latency or ram.")
    max_accuracy_drop: float = Field(default=1.0, ge=0.0, le=100.0,
                                     description="Largest accepted accuracy loss, in points "
                                     "(classification datasets only).")
    quality_budget: str | None = Field(
        default=None, max_length=40, description="The budget in the dataset task's metric, "
        "METRIC=VALUE: accuracy=1 (points), cosine=0.01 (mean cosine drop), mae=0.1, "
        "auc=0.02, snr=30 (a floor in dB). Default: the task's (see docs/optimize).")

    @field_validator("quality_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, number = parse_quality_budget(value)
        return f"{name}={number:g}"
    time_budget_s: float = Field(default=600.0, gt=0.0, le=MAX_SEARCH_BUDGET_S,
                                 description="Search time in seconds (checked between "
                                             "candidates).")
    max_trials: int | None = Field(default=None, ge=1, le=MAX_SEARCH_TRIALS,
                                   description="Exactly this many candidate runs at most "
                                               "(default: as many as the time allows).")
    epochs: int = Field(default=3, ge=1, le=MAX_SEARCH_EPOCHS,
                        description="Fine-tuning epochs of training steps.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the sampler.")


def _alive(runner: str | None) -> bool:
    """Whether the process ``host:pid:start`` may still run (another host: assume so)."""
    if not runner:
        return False
    parts = runner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname()[:150]:
        return True
    try:
        return process_tag(int(parts[1])) == int(parts[2])
    except ValueError:
        return False


class Searches:
    """Creates, executes, lists and cancels searches against the service facade's stores.

    Args:
        services: The stores and the engine the candidate runs go through.
        on_event: Where the progress of every search goes (the server's event bus).
        run_events: Where the candidate runs' own progress goes.
        max_workers: Searches executed at once by :meth:`start`.
    """

    def __init__(self, services: Services, *,
                 on_event: Callable[[RunEvent], None] | None = None,
                 run_events: Callable[[RunEvent], None] | None = None,
                 max_workers: int = 2) -> None:
        self.services = services
        self.store = SearchStore(services.meta)
        self.on_event = on_event
        self.run_events = run_events
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._closing = threading.Event()

    # records ------------------------------------------------------------------------------

    def create(self, request: SearchRequest, project: str | None = None,
               created_by: str | None = None) -> Search:
        """Check the model, dataset and device in ``project`` and record a queued search."""
        project = project or DEFAULT_PROJECT
        model = self.services.get_model(request.model, project)
        dataset = self.services.get_dataset(request.dataset, project)
        if dataset.site is not None:
            raise InvalidInputError(f"dataset {dataset.name!r} stays at {dataset.location}; "
                                    "a search measures candidates on this server, so it "
                                    "takes a dataset stored here", {"field": "dataset"})
        if request.device:
            self.services.get_device(request.device, {project})
        return self.store.add(Search(
            id=new_id("search"), project=project, created_by=created_by, model_id=model.id,
            model_name=model.name, dataset_id=dataset.id, dataset_name=dataset.name,
            device=request.device, objective=request.objective,
            max_accuracy_drop=request.max_accuracy_drop,
            quality_budget=self._checked_budget(request.quality_budget, dataset.task),
            time_budget_s=request.time_budget_s,
            max_trials=request.max_trials, epochs=request.epochs, seed=request.seed))

    @staticmethod
    def _checked_budget(budget: str | None, task: Task) -> str | None:
        """``budget`` when it is in ``task``'s metric (or a search on it has a default)."""
        try:
            resolve_quality_budget(task, 1.0, budget)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        return budget

    def get(self, search_id: str, projects: Collection[str] | None = None) -> Search:
        return self.store.get(search_id, projects)

    def list(self, projects: Collection[str] | None = None) -> list[Search]:
        return self.store.list(projects)

    def cancel(self, search_id: str) -> Search:
        """Cancel a queued search now; a running one stops its current candidate run within
        about a second and ends ``cancelled`` with what it found so far.

        Raises:
            ConflictError: the search has ended.
        """
        search = self.store.request_cancel(search_id)
        if search.state is SearchState.cancelled:
            self._emit(search.id, STATE, search.state.value)
            self._emit(search.id, DONE, search.state.value)
        return search

    # execution ----------------------------------------------------------------------------

    def start(self, search_id: str) -> bool:
        """Execute a queued search in a background thread; False when closing."""
        with self._lock:
            if self._closing.is_set():
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers,
                                                thread_name_prefix="tinymlaas-search")
            self._pool.submit(self._run_logged, search_id)
        return True

    def _run_logged(self, search_id: str) -> None:
        try:
            self.run(search_id)
        except ConflictError as exc:  # cancelled while queued, or taken by another process
            log.info("search %s not executed here: %s", search_id, exc.message)
        except Exception:
            log.exception("search %s could not be executed", search_id)

    def run(self, search_id: str,
            on_event: Callable[[RunEvent], None] | None = None) -> Search:
        """Execute a queued search in this thread until it ends; returns it ended.

        Raises:
            ConflictError: it is not queued (cancelled, or executed by another process).
        """
        if not self.store.claim(search_id, lease_owner()):
            current = self.store.get(search_id)
            raise ConflictError(f"search {search_id} is {current.state.value}; only a queued "
                                "search can be started", {"search": search_id,
                                                          "state": current.state.value})
        with self._lock:
            self._active.add(search_id)
        try:
            return self._execute(self.store.get(search_id), on_event)
        finally:
            with self._lock:
                self._active.discard(search_id)

    def _execute(self, search: Search,
                 on_event: Callable[[RunEvent], None] | None) -> Search:
        from tinymlaas.optimize import optimize

        def emit(stage: str, status: str, data: dict[str, Any] | None = None) -> None:
            self._emit(search.id, stage, status, data, on_event)

        baseline: dict[str, Any] = {}

        def record(candidate: Candidate) -> None:
            if not baseline and candidate.run_id:  # a candidate that could not start has none
                run = self.services.get_run(candidate.run_id)
                baseline.update({k: v for k, v in run.baseline.items() if k != "outputs_sha"})
            self.store.add_candidate(search.id, candidate, baseline)
            emit(CANDIDATE, candidate.status, candidate.model_dump(mode="json"))

        def stopping() -> bool:
            return self._closing.is_set() or self.store.is_cancel_requested(search.id)

        emit(STATE, SearchState.running.value)
        try:
            result = optimize(
                self.services, search.model_id, search.dataset_id, device=search.device,
                objective=search.objective, max_accuracy_drop=search.max_accuracy_drop,
                quality_budget=search.quality_budget,
                budget=search.time_budget_s, max_trials=search.max_trials,
                epochs=search.epochs, project=search.project, seed=search.seed,
                on_candidate=record, should_stop=stopping,
                execute=lambda run_id: self._execute_run(search.id, run_id, stopping))
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C in the CLI: leave no search running
                self.store.finish(search.id, SearchState.failed, error=INTERRUPTED,
                                  message=INTERRUPTED)
                raise
            if not isinstance(exc, TinymlaasError):
                log.exception("search %s failed", search.id)
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            ended = self.store.finish(search.id, SearchState.failed, error=message,
                                      message=f"the search failed: {message}")
        else:
            state, error, message = SearchState.succeeded, None, result.message
            if self._closing.is_set():
                state, error = SearchState.failed, INTERRUPTED
                message = f"{INTERRUPTED}; {result.message}"
            elif self.store.is_cancel_requested(search.id):
                state = SearchState.cancelled
                message = (f"cancelled after {len(result.candidates)} candidate(s); "
                           f"{result.message}")
            ended = self.store.finish(
                search.id, state, error=error, message=message, baseline=result.baseline,
                candidates=result.candidates, pareto=result.pareto,
                recommended=result.recommended, closest=result.closest,
                sensitivity=result.sensitivity, elapsed_s=result.elapsed_s)
        emit(STATE, ended.state.value)
        emit(DONE, ended.state.value)
        return ended

    def _execute_run(self, search_id: str, run_id: str, stopping: Callable[[], bool]) -> Run:
        """Execute one candidate run, stopping it when the search is cancelled."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(CANCEL_POLL_S):
                try:
                    if stopping():
                        self.services.engine.cancel(run_id)
                        return
                except Exception:
                    log.exception("search %s: checking for a cancel failed", search_id)

        watcher = threading.Thread(target=watch, name="tinymlaas-search-cancel", daemon=True)
        watcher.start()
        try:
            run = self.services.execute_run(run_id, self.run_events)
        finally:
            done.set()
            watcher.join()
        if self.run_events is not None:  # the run's event stream may close now
            self.run_events(RunEvent(run_id, DONE, run.status.value,
                                     1.0 if run.status.value in {"succeeded", "degraded"}
                                     else 0.0,
                                     run.error or ""))
        return run

    def _emit(self, search_id: str, stage: str, status: str,
              data: dict[str, Any] | None = None,
              extra: Callable[[RunEvent], None] | None = None) -> None:
        event = RunEvent(search_id, stage, status, data=data or {})
        for sink in (self.on_event, extra):
            if sink is not None:
                try:
                    sink(event)
                except Exception:
                    log.exception("search %s: an event listener failed", search_id)

    def recover(self, start_queued: bool = True) -> dict[str, builtins.list[str]]:
        """Mark failed the running searches whose process on this machine stopped, and
        with ``start_queued`` start the queued ones (a server does both when it starts)."""
        interrupted = []
        for search_id, runner in self.store.with_state(SearchState.running):
            with self._lock:
                if search_id in self._active:
                    continue
            if not _alive(runner):
                self.store.finish(search_id, SearchState.failed, error=INTERRUPTED,
                                  message=INTERRUPTED)
                interrupted.append(search_id)
        started = [search_id for search_id, _ in self.store.with_state(SearchState.queued)
                   if start_queued and self.start(search_id)]
        if interrupted:
            log.warning("%d interrupted search(es) marked failed", len(interrupted))
        return {"interrupted": interrupted, "started": started}

    def shutdown(self, wait: bool = False) -> None:
        """Take no more searches and stop the running ones (their current candidate run is
        cancelled and they end failed, interrupted; queued ones stay queued for the next
        start); with ``wait``, wait for them."""
        with self._lock:
            pool = self._pool
            self._closing.set()
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def parse_request(data: dict[str, Any]) -> SearchRequest:
    """A :class:`SearchRequest` from plain values, or one readable error."""
    from pydantic import ValidationError

    try:
        return SearchRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                             for e in exc.errors())
        raise InvalidInputError(f"invalid search: {problems}") from None
