"""The server's run runtime: a background pool executing submitted runs and an in-process
pub/sub of their progress events (keyed by run id) for the live event stream.

Nothing here knows about HTTP; the app creates one :class:`RunQueue` at start-up, and a
:class:`Reaper` while it serves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tinymlaas.domain import Run, RunStatus
from tinymlaas.engine import RunEvent
from tinymlaas.errors import ConflictError
from tinymlaas.service import Services

__all__ = ["TERMINAL", "EventBus", "Reaper", "RunQueue", "Subscription"]

log = logging.getLogger("tinymlaas.runs")
TERMINAL = frozenset({RunStatus.succeeded, RunStatus.degraded, RunStatus.failed,
                      RunStatus.cancelled})
#: The stage of the last event of a run, published after it has been recorded.
DONE = "done"


@dataclass(eq=False)
class Subscription:
    run_id: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RunEvent] = field(default_factory=asyncio.Queue)


class EventBus:
    """Fan-out of run events from worker threads to asyncio subscribers."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()

    def subscribe(self, run_id: str) -> Subscription:
        """Call from the event loop that will read the subscription's queue."""
        sub = Subscription(run_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.run_id]

    def publish(self, event: RunEvent) -> None:
        """Thread-safe; never blocks and never raises."""
        with self._lock:
            subs = list(self._subs.get(event.run_id, ()))
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, event)
            except RuntimeError:  # the subscriber's loop has closed
                self.unsubscribe(sub)


class RunQueue:
    """Executes submitted runs in background threads with the engine.

    Args:
        services: The service facade (engine and stores).
        bus: Where progress events go.
        on_finished: Called with every run that ends (for notifications); errors are logged.
        max_workers: Runs executed at once.
    """

    def __init__(self, services: Services, bus: EventBus,
                 on_finished: Callable[[Run], object] | None = None,
                 max_workers: int = 2) -> None:
        self.services = services
        self.bus = bus
        self.on_finished = on_finished
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="tinymlaas-run")
        self._lock = threading.Lock()
        self._queued: dict[str, Future[None]] = {}
        self._closed = False

    def submit(self, run_id: str, only_from: Collection[RunStatus] | None = None) -> bool:
        """Queue a run; False when it is already queued or executing. With ``only_from``,
        it is executed only if it is still in one of those statuses when its turn comes
        (several server processes may queue the same pending run: one executes it)."""
        with self._lock:
            if self._closed or run_id in self._queued:
                return False
            self._queued[run_id] = self._pool.submit(self._execute, run_id, only_from)
            return True

    def submit_run(self, run: Run) -> None:
        """Queue a pending, failed or cancelled run (a resubmitted run resumes from the
        step cache).

        Raises:
            ConflictError: it is queued or executing already, or it has succeeded.
        """
        if run.status in {RunStatus.succeeded, RunStatus.degraded}:
            raise ConflictError(f"run {run.id} has already ended ({run.status.value}); rerun "
                                "it for a new run")
        if run.status is RunStatus.running or not self.submit(run.id, {run.status}):
            raise ConflictError(f"run {run.id} is already queued or running")

    def cancel_run(self, run: Run) -> None:
        """Stop a queued or executing run.

        A run this process has not queued (another server process of the same database
        has) is cancelled through the store while it is pending; a run another process is
        executing is refused.

        Raises:
            ConflictError: the run has finished or another process is executing it.
        """
        if run.status in TERMINAL:
            raise ConflictError(f"run {run.id} is {run.status.value}; only a queued or "
                                "running run can be cancelled")
        if not self.cancel(run.id):
            self.services.cancel_run(run.id)

    def is_queued(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._queued

    def cancel(self, run_id: str) -> bool:
        """Ask a queued or executing run to stop; False when it is not in this queue."""
        with self._lock:
            if run_id not in self._queued:
                return False
        # The engine also stops a step whose worker is starting at this moment.
        self.services.engine.cancel(run_id)
        return True

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking runs; with ``wait``, cancel the executing ones and wait for them."""
        with self._lock:
            self._closed = True
            executing = list(self._queued)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if wait:
            for run_id in executing:
                self.services.engine.cancel(run_id)
            self._pool.shutdown(wait=True)

    def _execute(self, run_id: str, only_from: Collection[RunStatus] | None = None) -> None:
        run: Run | None = None
        try:
            # A cancel that came while queued is seen by the engine before the first step.
            run = self.services.execute_run(run_id, self.bus.publish, only_from=only_from)
        except ConflictError as exc:  # another process executes it: leave it alone
            log.warning("run %s not executed here: %s", run_id, exc.message)
        except Exception:
            log.exception("run %s could not be executed", run_id)
            try:
                self.services.meta.update_run(run_id, status=RunStatus.failed,
                                              error="internal error while executing the run",
                                              finished_at=datetime.now(UTC))
                run = self.services.get_run(run_id)
            except Exception:
                log.exception("run %s could not be marked failed", run_id)
        finally:
            with self._lock:
                self._queued.pop(run_id, None)
        if run is None:
            return
        self.bus.publish(RunEvent(run_id, DONE, run.status.value,
                                  1.0 if run.status in {RunStatus.succeeded,
                                                        RunStatus.degraded} else 0.0,
                                  run.error or ""))
        if self.on_finished is not None:
            try:
                self.on_finished(run)
            except Exception:
                log.exception("notifications for run %s failed", run_id)


class Reaper:
    """Calls ``recover`` every ``interval_s`` seconds in a background thread until stopped
    (the server recovers runs whose executing process stopped, while it is up)."""

    def __init__(self, recover: Callable[[], object], interval_s: float) -> None:
        self.recover = recover
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tinymlaas-reaper",
                                        daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.recover()
            except Exception:
                log.exception("recovering interrupted runs failed; retrying in %.0f s",
                              self.interval_s)
