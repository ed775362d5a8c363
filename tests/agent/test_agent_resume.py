"""A download cut short resumes where it stopped: the next attempt asks for the rest with
``Range: bytes=<what is on disk>-``, the server answers 206, and the whole file must still
hash as the signed manifest says."""

from __future__ import annotations

import signal
from pathlib import Path

from agent_e2e import Studio, agent, current_release, enroll, proxy, summary


def test_agent_resumes_an_interrupted_download_with_a_range_request(
        studio: Studio, tmp_path: Path) -> None:
    device, code = enroll(studio, "resume-1", "e2e-resume")
    release = studio.client.create_release(studio.run_id)
    package = release.manifest["signed"]["package"]
    studio.client.deploy("e2e-resume", release=release.id)
    root = tmp_path / "agent"
    with proxy(studio.url) as (url, handler):
        crashed = agent(root, server=url, code=code, fault="mid-download")
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        (part,) = (root / "downloads").glob(f"*/{package['name']}.part")
        have = part.stat().st_size
        assert 0 < have < package["size"]
        handler.seen.clear()

        done = agent(root)
        assert done.returncode == 0, done.stderr
        assert summary(done)["outcome"] == "committed"
    fetches = [(rng, status) for path, rng, status in handler.seen
               if path.endswith(f"/artifacts/{package['name']}")]
    assert fetches == [(f"bytes={have}-", 206)]
    assert current_release(root) == (release.version, "a")
    assert studio.client.fleet_device(device).version == release.version
