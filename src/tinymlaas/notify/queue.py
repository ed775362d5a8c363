"""A bounded queue of notification deliveries, worked off by a few threads of its own.

Runs only *enqueue* their notifications, so a slow or dead receiver never holds a run's
thread. Each delivery is tried up to ``attempts`` times; a retry is scheduled with a due
time (exponential backoff) in a heap rather than slept on, so a worker moves on to other
deliveries meanwhile. When ``max_pending`` deliveries wait (retries included), new ones
are dropped and logged. :meth:`DeliveryQueue.close` waits briefly for what is due, then
gives up: a delivery in progress ends by its own time limit in its daemon thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Attempt", "Delivery", "DeliveryQueue"]

log = logging.getLogger("tinymlaas.notify")


@dataclass(frozen=True)
class Attempt:
    """What one try of a delivery gave: ``ok``, else whether trying again may help."""

    ok: bool
    detail: str = ""
    retry: bool = False


@dataclass
class Delivery:
    """One notification to deliver: ``send`` makes one attempt (it should not raise; an
    exception counts as a failure that is not retried)."""

    name: str
    send: Callable[[], Attempt]
    tries: int = 0


class DeliveryQueue:
    """Delivers :class:`Delivery` items from ``workers`` daemon threads (started on the
    first submit).

    Args:
        max_pending: Deliveries kept waiting (new and retries); more are dropped.
        attempts: Tries per delivery.
        workers: Delivery threads.
        backoff_s: Wait before the first retry; doubled for each later one.
        max_backoff_s: Longest wait between tries.
    """

    def __init__(self, *, max_pending: int = 1000, attempts: int = 4, workers: int = 2,
                 backoff_s: float = 1.0, max_backoff_s: float = 300.0) -> None:
        self.max_pending = max_pending
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._workers = workers
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._closed = False  # no new deliveries
        self._stopped = False  # workers exit
        self._stats = {"queued": 0, "delivered": 0, "failed": 0, "retried": 0, "dropped": 0}

    def submit(self, delivery: Delivery) -> bool:
        """Queue ``delivery``; False (logged) when the queue is full or closed. Never blocks
        on a delivery."""
        with self._cond:
            if self._closed or len(self._heap) >= self.max_pending:
                self._stats["dropped"] += 1
                why = "shutting down" if self._closed else f"{len(self._heap)} pending, full"
                log.warning("notification queue %s: dropped %s", why, delivery.name)
                return False
            heapq.heappush(self._heap, (time.monotonic(), next(self._seq), delivery))
            self._stats["queued"] += 1
            if not self._threads:
                self._start()
            self._cond.notify()
            return True

    def stats(self) -> dict[str, int]:
        """Counts so far, and ``pending`` and ``active`` now."""
        with self._cond:
            return {**self._stats, "pending": len(self._heap), "active": self._active}

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is pending or being delivered; False when time ran out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Take no more deliveries; deliver what comes due within ``timeout_s``, then drop
        the rest (logged) and stop the workers without waiting for a delivery in progress."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            while self._active or (self._heap and self._heap[0][0] <= deadline):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._stopped = True
            dropped, active = len(self._heap), self._active
            self._heap.clear()
            self._stats["dropped"] += dropped
            self._cond.notify_all()
        if dropped or active:
            log.warning("notifications stopped: %d pending dropped, %d still in progress",
                        dropped, active)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # workers --------------------------------------------------------------------------------

    def _start(self) -> None:
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"tinymlaas-notify-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next(self) -> Delivery | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    self._active += 1
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _work(self) -> None:
        while (delivery := self._next()) is not None:
            try:
                result = delivery.send()
            except Exception as exc:
                log.exception("notification %s could not be sent", delivery.name)
                result = Attempt(False, f"{type(exc).__name__}: {exc}")
            delivery.tries += 1
            with self._cond:
                self._active -= 1
                self._settle(delivery, result)
                self._cond.notify_all()

    def _settle(self, delivery: Delivery, result: Attempt) -> None:
        if result.ok:
            self._stats["delivered"] += 1
            log.info("notification %s delivered (%s)", delivery.name, result.detail)
        elif result.retry and delivery.tries < self.attempts and not self._closed:
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** (delivery.tries - 1))
            heapq.heappush(self._heap, (time.monotonic() + wait, next(self._seq), delivery))
            self._stats["retried"] += 1
            log.info("notification %s: attempt %d failed (%s); retrying in %.1fs",
                     delivery.name, delivery.tries, result.detail, wait)
        else:
            self._stats["failed"] += 1
            log.warning("notification %s not delivered after %d attempt(s): %s",
                        delivery.name, delivery.tries, result.detail)
