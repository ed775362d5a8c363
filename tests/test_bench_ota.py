"""``bench/ota.py`` in a small mode: a real server, five simulated devices polling fast, a
rollout in two waves. Every device must download, verify and commit the release; the JSON's
counts must add up, and the benchmarks page renders the same figures. No timing is
asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 5


def test_the_ota_benchmark_updates_every_device_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "ota.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ota.py"), "--devices",
                           str(DEVICES), "--poll-s", "0.1", "--timeout-s", "120",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["bench"] == "ota"
    assert result["parameters"]["devices"] == DEVICES
    assert result["parameters"]["waves"] == [10, 100]
    assert result["parameters"]["database"] == "sqlite"
    assert "all 5 devices updated" in result["goal"]["text"]
    assert set(result["goal_met"]) == {"failed", "rollout_s", "poll_p99_ms"}
    assert result["goal_met"]["failed"] is True
    assert result["pass"] == all(result["goal_met"].values())

    r = result["results"]
    assert r["state"] == "finished", r["message"]
    assert r["message"] == f"finished: {DEVICES} of {DEVICES} devices updated"
    assert r["counts"] == {"succeeded": DEVICES}
    assert r["succeeded"] == DEVICES and r["failed"] == 0
    assert r["failures"] == {} and r["devices_crashed"] == {}
    assert r["rollout_s"] is not None and r["rollout_s"] > 0
    # each device: the listing, four artifacts (manifest, ticket, wheel, golden input) and
    # seven stages reported
    assert r["artifacts_downloaded"] == 4 * DEVICES
    assert r["feedbacks"] == 7 * DEVICES
    assert r["bytes_downloaded"] == DEVICES * r["bytes_per_device"] > 0
    assert r["poll_errors"] == 0 and r["http_errors"] == 0
    assert 0 < r["polls"] <= r["polls_total"]
    polls = r["poll_ms"]
    assert 0 < polls["p50"] <= polls["p95"] <= polls["p99"] <= polls["max"]
    assert r["poll_alone_ms"]["polls"] == 50
    assert 0 < r["poll_alone_ms"]["p50"] <= r["poll_alone_ms"]["p99"]
    assert not math.isnan(r["device_update_s"]["p50"])
    assert r["cpu"]["server_s"] > 0
    assert "devices succeeded / failed" in proc.stdout and "5 / 0" in proc.stdout

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    section = "\n".join(report.render_ota(result))
    assert "## Over-the-air rollout (`python bench/ota.py`)" in section
    assert f"| devices succeeded / failed | {DEVICES} / 0 | 0 failed: met |" in section
    assert f"| polls (errors) | {r['polls']:,} (0) |" in section
