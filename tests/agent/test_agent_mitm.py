"""A server (or a man in the middle) that serves device A the ticket of device B, and
rewrites the unsigned DDI metadata to match: the ticket's signature is good, but it names
another device, so A refuses, says why to the server, and installs nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_e2e import Proxy, Studio, agent, current_release, enroll, proxy, summary


@pytest.fixture
def studio_proxy(studio: Studio) -> Iterator[tuple[str, type[Proxy]]]:
    with proxy(studio.url) as found:
        yield found


def test_agent_refuses_a_ticket_signed_for_another_device(
        studio: Studio, tmp_path: Path, studio_proxy: tuple[str, type[Proxy]]) -> None:
    url, handler = studio_proxy
    device_a, code_a = enroll(studio, "door-a", "e2e-mitm")
    device_b, code_b = enroll(studio, "door-b", "e2e-mitm")
    release = studio.client.create_release(studio.run_id)
    rollout = studio.client.deploy("e2e-mitm", release=release.id)

    # device B's own, genuinely signed ticket for the same release
    enrolled = httpx.post(f"{studio.url}/ddi/enroll", json={"code": code_b}).json()
    b_auth = {"Authorization": f"TargetToken {enrolled['token']}"}
    base = httpx.get(f"{studio.url}/ddi/{enrolled['tenant']}/controller/v1/{device_b}",
                     headers=b_auth).json()
    deployment = httpx.get(base["_links"]["deploymentBase"]["href"], headers=b_auth).json()
    ticket = next(a for a in deployment["deployment"]["chunks"][0]["artifacts"]
                  if a["filename"] == "ticket.json")
    handler.ticket = httpx.get(ticket["_links"]["download-http"]["href"], headers=b_auth).content
    assert json.loads(handler.ticket)["signed"]["controller_id"] == device_b

    root = tmp_path / "agent"
    done = agent(root, server=url, code=code_a)
    assert done.returncode == 0, done.stderr
    result = summary(done)
    assert result["outcome"] == "refused", result
    assert f"the ticket is for device '{device_b}'" in result["details"][0]
    assert current_release(root) == (None, None)
    action = next(a for a in studio.client.rollout(rollout.id).actions
                  if a.device_id == device_a)
    assert (action.state.value, action.stage) == ("failed", "refused")
    assert device_b in action.message
    assert studio.client.fleet_device(device_a).version is None
