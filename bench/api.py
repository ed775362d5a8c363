"""Benchmark of the Studio API: read latency under concurrent load and run submission
throughput, against a real server (``tinymlaas serve`` in a subprocess on 127.0.0.1, the
embedded SQLite setup) driven by httpx clients in threads.

    .venv/bin/python bench/api.py [--threads 8] [--duration 10] [--submissions 50]

Prints a table and writes ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.client import Client

RESULTS = Path(__file__).resolve().parent / "results" / "api.json"
PIPELINE = {"steps": ["fuse"], "evaluate": False}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "TINYMLAAS_HOME": str(home), "TINYMLAAS_LOGIN_RATE_LIMIT": "1000"}
    env.pop("TINYMLAAS_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "tinymlaas.cli.main", "serve", "--port",
                                str(port), "--log-level", "warning"], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def read_load(url: str, token: str, paths: list[str], threads: int,
              duration_s: float) -> dict[str, float]:
    """Each thread loops over ``paths`` with its own connection for ``duration_s``."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + duration_s

    def worker(offset: int) -> None:
        nonlocal failures
        mine: list[float] = []
        bad = 0
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as client:
            i = offset
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = client.get(paths[i % len(paths)])
                mine.append((time.perf_counter() - start) * 1000)
                bad += response.status_code != 200
                i += 1
        with lock:
            latencies.extend(mine)
            failures += bad

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    return {"requests": len(latencies), "errors": failures,
            "throughput_rps": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies), "p99_ms": _percentile(latencies, 99),
            "max_ms": max(latencies)}


def submissions(url: str, token: str, model: str, dataset: str, count: int,
                threads: int) -> dict[str, float]:
    """``count`` POST /runs from ``threads`` threads; then wait until all have finished."""
    codes: list[int] = []
    lock = threading.Lock()
    todo = list(range(count))

    def worker() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=120) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    index = todo.pop()
                response = client.post("/api/v1/runs", json={
                    "model": model, "dataset": dataset, "pipeline": PIPELINE,
                    "name": f"bench-{index}"})
                with lock:
                    codes.append(response.status_code)

    began = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    accepted_s = time.perf_counter() - began
    with Client(url, token) as client:
        while True:
            runs = [r for r in client.list_runs() if r.name.startswith("bench-")]
            if all(r.status in {"succeeded", "failed", "cancelled"} for r in runs):
                break
            time.sleep(0.1)
    finished_s = time.perf_counter() - began
    return {"submitted": count, "accepted": codes.count(201),
            "submit_per_s": count / accepted_s, "all_finished_s": finished_s,
            "runs_per_s": count / finished_s,
            "succeeded": sum(r.status == "succeeded" for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--submissions", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tinymlaas-bench-") as tmp:
        home, port = Path(tmp) / "home", _free_port()
        server = _start(home, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with Client(url) as client:
                client.register("bench@example.com", "bench password")
                client.login("bench@example.com", "bench password")
                token = client.create_token("bench").token
                model = client.upload_model(write_digits_onnx(Path(tmp) / "digits.onnx"))
                data = client.add_builtin_dataset("digits")
                run = client.follow(client.create_run(model.id, data.id,
                                                      pipeline=PIPELINE).id)
            paths = [f"/api/v1/runs/{run.id}", "/api/v1/models", f"/api/v1/models/{model.id}",
                     "/api/v1/runs?status=succeeded"]
            reads = read_load(url, token, paths, args.threads, args.duration)
            submit = submissions(url, token, model.id, data.id, args.submissions,
                                 args.threads)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "setup": {"database": "sqlite", "threads": args.threads,
                        "read_duration_s": args.duration, "read_paths": paths,
                        "pipeline": PIPELINE},
              "reads": reads, "submissions": submit}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    rows = [
        ("reads: requests (errors)", f"{reads['requests']} ({reads['errors']})"),
        ("reads: throughput", f"{reads['throughput_rps']:.0f} req/s"),
        ("reads: latency p50", f"{reads['p50_ms']:.1f} ms"),
        ("reads: latency p99", f"{reads['p99_ms']:.1f} ms"),
        ("submissions: accepted", f"{submit['accepted']}/{submit['submitted']}"),
        ("submissions: rate", f"{submit['submit_per_s']:.1f} runs/s"),
        ("runs: all finished after", f"{submit['all_finished_s']:.1f} s"),
        ("runs: end-to-end", f"{submit['runs_per_s']:.1f} runs/s "
                             f"({submit['succeeded']} succeeded)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"tinymlaas API benchmark ({args.threads} client threads, SQLite, "
          f"{os.cpu_count()} CPUs)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
