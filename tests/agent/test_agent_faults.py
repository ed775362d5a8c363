"""Never bricked: the agent killed (SIGKILL, ``TINYMLAAS_AGENT_FAULT``) at each point of an
update, then started again, ends on a complete committed slot, and the server shows the
true state: the update committed when the crash came before the switch, rolled back to
the previous release when it came after. This file: the download and the switch."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_e2e import TRIAL_POINTS, UPDATE_POINTS, Studio, crash_and_recover

from tinymlaas.agent.faults import POINTS


@pytest.mark.parametrize("point", UPDATE_POINTS)
def test_agent_recovers_from_a_crash_while_updating(studio: Studio, tmp_path: Path,
                                                    point: str) -> None:
    crash_and_recover(studio, tmp_path, point)


def test_agent_every_fault_point_has_a_crash_test() -> None:
    assert sorted(UPDATE_POINTS + TRIAL_POINTS) == sorted(POINTS)
