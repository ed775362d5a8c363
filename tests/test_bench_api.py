"""``bench/api.py`` in a tiny mode: it starts real servers on SQLite and PostgreSQL (with
two worker processes), loads them, and writes JSON whose counts add up; the benchmarks
page renders the same figures. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_benchmark_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "api.py"), "--clients", "3",
                           "--duration", "1", "--submissions", "6", "--workers", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["database"] for r in result["results"]] == ["sqlite", "postgresql"]
    assert result["setup"]["clients"] == 3 and result["setup"]["workers"] == 2
    for column in result["results"]:
        submitted = column["submissions"]
        assert submitted["requests"] == 6 and submitted["accepted"] == 6
        assert submitted["errors"] == 0
        for reads in (column["get_run"], column["list_runs"]):
            assert reads["requests"] > 0 and reads["errors"] == 0
            assert reads["p50_ms"] <= reads["p99_ms"] <= reads["max_ms"]
    assert "| `GET /runs/{id}` reads/s | " in proc.stdout

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    section = "\n".join(report.render_api(result))
    sqlite, postgres = result["results"]
    assert "| | sqlite | postgresql |" in section
    assert (f"| submissions accepted (errors) | {sqlite['submissions']['accepted']} (0) | "
            f"{postgres['submissions']['accepted']} (0) |") in section
    assert (f"| `GET /runs/{{id}}` reads/s | {sqlite['get_run']['per_s']:.0f} | "
            f"{postgres['get_run']['per_s']:.0f} |") in section
