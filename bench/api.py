"""Benchmark of the Studio API under concurrent load, against a real server
(``tinymlaas serve`` in a subprocess on 127.0.0.1) on SQLite and on PostgreSQL, with
``--clients`` concurrent connections.

For each database: run submissions (``POST /runs`` of a one-step pipeline from asyncio
clients on httpx, which count the runs accepted; after the first its step is a cache hit, so
the runs finish quickly and the queue drains), then reads for ``--duration`` seconds each of
``GET /runs/{id}`` and of a paginated ``GET /runs?limit=20`` (each connection walks the
pages, following the ``Link`` headers), driven by wrk (``apt-get install wrk``), whose C
event loop takes little of the CPUs it shares with the server. Throughput, p50/p99 latency
and errors (any status but the expected one, or a transport error) are measured on the
client side.

    .venv/bin/python bench/api.py [--clients 100] [--duration 10] [--submissions 300]
        [--workers 2] [--databases sqlite postgresql] [--out bench/results/api.json]

PostgreSQL: a fresh database is created next to ``--postgres`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and dropped afterwards. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tinymlaas.api.testing import (
    free_port,
    postgres_database,
    start_server,
    stop_server,
    write_digits_onnx,
)
from tinymlaas.client import Client

RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PIPELINE = {"steps": ["fuse"], "evaluate": False}
PASSWORD = "bench password for the api"
#: Goals of the API (docs/api.md#performance).
GOALS = {"reads_per_s": 1000, "p99_ms": 250, "submissions_per_s": 100}


def _start(home: Path, port: int, database_url: str | None, workers: int) -> subprocess.Popen:
    env = {**os.environ, "TINYMLAAS_HOME": str(home), "TINYMLAAS_LOGIN_RATE_LIMIT": "1000"}
    env.pop("TINYMLAAS_DATABASE_URL", None)
    if database_url:
        env["TINYMLAAS_DATABASE_URL"] = database_url
    try:
        return start_server(env, port, workers=workers)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    return {"requests": len(latencies), "errors": errors,
            "per_s": len(latencies) / elapsed if elapsed else 0.0,
            "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
            "max_ms": max(latencies, default=float("nan"))}


_TLS = ssl.create_default_context()  # one for every client (plain HTTP: never used)


def _client(url: str, token: str) -> httpx.AsyncClient:
    """One client with one connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                             limits=limits, timeout=60, verify=_TLS)


#: Lua for wrk: follow each page's ``Link: <...>; rel="next"`` (back to the first page after
#: the last), and print the summary as one JSON line. Latencies are in microseconds.
_WRK_SCRIPT = """
local first = os.getenv("BENCH_FIRST")
local path = first
request = function() return wrk.format("GET", path) end
if os.getenv("BENCH_FOLLOW") == "1" then
  response = function(status, headers, body)
    local link = headers["link"] or headers["Link"]
    local url = link and string.match(link, '<([^>]+)>;%s*rel="next"')
    path = url and (string.match(url, "^https?://[^/]+(/.*)$") or url) or first
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, '
    .. '"p99_us": %d, "max_us": %d}\\n', summary.requests, summary.duration, e.connect,
    e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""


def _reads(url: str, token: str, clients: int, duration_s: float, first: str) -> dict[str, Any]:
    """``clients`` connections for ``duration_s``, driven by wrk: each GETs ``first`` and
    follows its ``Link`` headers to the last page, again and again (a single resource has
    no ``Link``). wrk is written in C: as the load generator shares the server's CPUs, the
    less of them it takes, the more the figures are the server's."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench/api.py needs wrk, the HTTP load generator (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    try:
        proc = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration_s))}s", "--timeout", "30s",
             "-s", script.name, "-H", f"Authorization: Bearer {token}", url + first],
            capture_output=True, text=True, timeout=duration_s + 120, check=False,
            env={**os.environ, "BENCH_FIRST": first, "BENCH_FOLLOW": "1" if "?" in first else "0"})
    finally:
        os.unlink(script.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed (exit code {proc.returncode}): {proc.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    elapsed = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "errors": errors,
            "per_s": raw["requests"] / elapsed if elapsed else 0.0,
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "load_generator": "wrk"}


async def _submissions(url: str, token: str, clients: int, count: int, model: str,
                       dataset: str) -> dict[str, float]:
    """``count`` POST /runs from ``clients`` tasks; accepted is a 201."""
    latencies: list[float] = []
    errors = 0
    ids: list[str] = []
    why: dict[str, int] = {}
    todo = iter(range(count))

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for index in todo:
            began = time.perf_counter()
            try:
                response = await http.post("/api/v1/runs", json={
                    "model": model, "dataset": dataset, "pipeline": PIPELINE,
                    "name": f"bench-{index}"})
                ok = response.status_code == 201
            except httpx.HTTPError as exc:
                ok, response = False, None
                why[type(exc).__name__] = why.get(type(exc).__name__, 0) + 1
            latencies.append((time.perf_counter() - began) * 1000)
            errors += not ok
            if ok and response is not None:
                ids.append(response.json()["id"])
            elif response is not None:
                why[str(response.status_code)] = why.get(str(response.status_code), 0) + 1

    https = [_client(url, token) for _ in range(clients)]
    began = time.perf_counter()
    await asyncio.gather(*(client_loop(http) for http in https))
    elapsed = time.perf_counter() - began
    await asyncio.gather(*(http.aclose() for http in https))
    result: dict[str, Any] = _summary(latencies, errors, elapsed)
    result["accepted"] = len(ids)
    result["error_kinds"] = why  # status code or exception: count
    return result


def _wait_drained(url: str, token: str, timeout_s: float = 900) -> float:
    """Seconds until no run is pending or running."""
    began = time.perf_counter()
    with Client(url, token) as client:
        while time.perf_counter() - began < timeout_s:
            busy = [r for status in ("pending", "running")
                    for r in client.list_runs(status=status)]
            if not busy:
                break
            time.sleep(0.5)
    return time.perf_counter() - began


def measure(database: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a server on ``database`` (sqlite or postgresql) and measure it."""
    with contextlib.ExitStack() as stack:
        database_url = (stack.enter_context(postgres_database(args.postgres))
                        if database == "postgresql" else None)
        with tempfile.TemporaryDirectory(prefix="tinymlaas-bench-") as tmp:
            port = free_port()
            server = _start(Path(tmp) / "home", port, database_url, args.workers)
            url = f"http://127.0.0.1:{port}"
            try:
                with Client(url) as client:
                    client.register("bench@example.com", PASSWORD)
                    client.login("bench@example.com", PASSWORD)
                    token = client.create_token("bench").token
                    model = client.upload_model(write_digits_onnx(Path(tmp) / "digits.onnx"))
                    data = client.add_builtin_dataset("digits")
                    run = client.follow(client.create_run(model.id, data.id,
                                                          pipeline=PIPELINE).id)
                submit = asyncio.run(_submissions(url, token, args.clients, args.submissions,
                                                  model.id, data.id))
                submit["drained_s"] = _wait_drained(url, token)
                one = _reads(url, token, args.clients, args.duration, f"/api/v1/runs/{run.id}")
                pages = _reads(url, token, args.clients, args.duration, "/api/v1/runs?limit=20")
            finally:
                stop_server(server)
    return {"database": database, "get_run": one, "list_runs": pages, "submissions": submit}


def table(result: dict[str, Any]) -> str:
    """The results side by side, one column per database, as a Markdown table."""
    columns = result["results"]
    rows = [
        ("`GET /runs/{id}` reads/s", lambda r: f"{r['get_run']['per_s']:.0f}"),
        ("`GET /runs/{id}` p50 / p99", lambda r: f"{r['get_run']['p50_ms']:.0f} / "
                                                 f"{r['get_run']['p99_ms']:.0f} ms"),
        ("`GET /runs?limit=20` pages/s", lambda r: f"{r['list_runs']['per_s']:.0f}"),
        ("`GET /runs?limit=20` p50 / p99", lambda r: f"{r['list_runs']['p50_ms']:.0f} / "
                                                     f"{r['list_runs']['p99_ms']:.0f} ms"),
        ("read errors", lambda r: f"{r['get_run']['errors'] + r['list_runs']['errors']}"),
        ("`POST /runs` accepted/s", lambda r: f"{r['submissions']['per_s']:.0f}"),
        ("`POST /runs` p50 / p99", lambda r: f"{r['submissions']['p50_ms']:.0f} / "
                                             f"{r['submissions']['p99_ms']:.0f} ms"),
        ("submissions accepted (errors)", lambda r: f"{r['submissions']['accepted']} "
                                                    f"({r['submissions']['errors']})"),
        ("queue drained after", lambda r: f"{r['submissions']['drained_s']:.1f} s"),
    ]
    lines = ["| | " + " | ".join(c["database"] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cell(c) for c in columns) + " |"
              for name, cell in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--submissions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default=POSTGRES,
                        help="URL of an existing PostgreSQL database (trust auth)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "load": os.getloadavg()[0]}
    results = []
    for database in args.databases:
        print(f"{database}...", file=sys.stderr)
        results.append(measure(database, args))
    result = {"meta": meta, "goals": GOALS,
              "setup": {"clients": args.clients, "read_duration_s": args.duration,
                        "submissions": args.submissions, "workers": args.workers,
                        "pipeline": PIPELINE},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"tinymlaas API benchmark: {args.clients} concurrent clients, {args.workers} server "
          f"processes, {os.cpu_count()} CPUs (load {meta['load']:.1f} at start)")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
