"""Never bricked: the agent killed (SIGKILL, ``TINYMLAAS_AGENT_FAULT``) at each point of an
update, then started again, ends on a complete committed slot, and the server shows the
true state: the update committed when the crash came before the switch, rolled back to
the previous release when it came after."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from agent_e2e import Studio, agent, current_release, enroll, summary

from tinymlaas.agent.faults import POINTS
from tinymlaas.agent.store import Layout, load_state

BEFORE_SWITCH = {"mid-download", "after-download"}


@pytest.mark.parametrize("point", POINTS)
def test_agent_recovers_from_a_crash_at_each_point(studio: Studio, tmp_path: Path,
                                                   point: str) -> None:
    group = f"faults-{point}"
    device, code = enroll(studio, f"crash-{point}", group)
    root = tmp_path / "agent"
    first = studio.client.create_release(studio.run_id)
    studio.client.deploy(group, release=first.id)
    assert summary(agent(root, server=studio.url, code=code))["outcome"] == "committed"
    assert current_release(root) == (first.version, "a")

    second = studio.client.create_release(studio.run_id)
    rollout = studio.client.deploy(group, release=second.id)
    crashed = agent(root, fault=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = load_state(Layout(root))
    assert state.committed is not None and state.committed.version == first.version
    if point == "mid-download":  # a part of the package is on disk, to be resumed
        (part,) = (root / "downloads").glob("*/*.part")
        assert 0 < part.stat().st_size < second.manifest["signed"]["package"]["size"]
    if point in BEFORE_SWITCH:
        assert state.trial is None and current_release(root) == (first.version, "a")

    done = agent(root)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    action = next(a for a in studio.client.rollout(rollout.id).actions if a.device_id == device)
    shown = studio.client.fleet_device(device)
    if point in BEFORE_SWITCH:
        assert result["outcome"] == "committed", result
        assert current_release(root) == (second.version, "b")
        assert action.state.value == "succeeded"
        assert (shown.version, shown.release_id) == (second.version, second.id)
    else:
        assert result["outcome"] == "rolled_back", result
        assert current_release(root) == (first.version, "a")
        assert (action.state.value, action.stage) == ("rolled_back", "rolled_back")
        assert "rolled back to version" in action.message
        assert (shown.version, shown.release_id) == (first.version, first.id)
    state = load_state(Layout(root))
    assert state.trial is None and state.pending == {}
    assert not (root / "current.new").is_symlink()
    assert not list((root / "slots").glob("*.partial"))
