"""Crash injection: ``TINYMLAAS_AGENT_FAULT=<point>`` makes the agent SIGKILL itself there.

Tests use it to prove the agent is never bricked: whatever point it dies at, the next start
recovers to a complete committed slot and tells the server the truth. The points, in the
order an update reaches them:

``mid-download``
    after the first chunk of the release's package file is on disk.
``after-download``
    every file downloaded and verified, nothing installed yet.
``before-replace``
    the new ``current`` symlink made (``current.new``), not yet moved over ``current``.
``after-replace``
    ``current`` switched, the trial not yet marked as switched in ``state.json``.
``after-switch``
    switched and recorded, before the health check.
``health``
    while the health check's process runs.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "POINTS", "fault"]

FAULT_ENV = "TINYMLAAS_AGENT_FAULT"
POINTS = ("mid-download", "after-download", "before-replace", "after-replace", "after-switch",
          "health")


def fault(point: str) -> None:
    """Die here, with SIGKILL (no cleanup, no flush), when the environment asks for it."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
