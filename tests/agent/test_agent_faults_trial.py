"""Never bricked: the agent killed (SIGKILL, ``TINYMLAAS_AGENT_FAULT``) at each point of an
update, then started again, ends on a complete committed slot, and the server shows the
true state: the update committed when the crash came before the switch, rolled back to
the previous release when it came after. This file: the trial, switched but not committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_e2e import TRIAL_POINTS, Studio, crash_and_recover


@pytest.mark.parametrize("point", TRIAL_POINTS)
def test_agent_recovers_from_a_crash_during_the_trial(studio: Studio, tmp_path: Path,
                                                      point: str) -> None:
    crash_and_recover(studio, tmp_path, point)
