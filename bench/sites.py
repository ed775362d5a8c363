"""Benchmark of site workers: 8 independent runs through a real server with a broker
(``tinymlaas serve`` with TINYMLAAS_BROKER_URL) and real ``tinymlaas worker`` processes,
with 1 worker, then with 2 workers, in one run of the script.

Each run has one command step that sleeps ``--step-s`` seconds and copies its input (each
run's own tag keeps it off the step cache). Reported:

- the wall-clock time of the 8 runs with 1 and with 2 workers, and the throughput ratio
  (goal: at least 1.8x);
- the dispatch overhead per step: the duration the server records for a step run alone at
  the site (queued, claimed, inputs fetched, run, output uploaded, result recorded) minus
  the same step's duration in the server's own processes, medians of three (goal: under
  150 ms).

    .venv/bin/python bench/sites.py [--runs 8] [--step-s 2] [--broker amqp://...]
        [--out bench/results/sites.json]

Needs the broker running (RabbitMQ at 127.0.0.1:5672 by default). Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tinymlaas.api.testing import (
    free_port,
    sandbox_python,
    start_server,
    stop_server,
    write_digits_onnx,
)
from tinymlaas.client import Client

RESULTS = Path(__file__).resolve().parent / "results" / "sites.json"
PASSWORD = "bench password for the sites"
GOALS = {"speedup_2_workers": 1.8, "dispatch_overhead_ms": 150}
TERMINAL = {"succeeded", "failed", "cancelled", "degraded"}


@functools.cache
def _step_python() -> str:
    exe = sandbox_python()
    if exe is None:
        raise SystemExit("no Python that the sandbox user 'nobody' can run")
    return exe


def _pipeline(step_s: float, tag: str) -> dict[str, Any]:
    script = ("import shutil, sys, time; time.sleep(float(sys.argv[3])); "
              "shutil.copy(sys.argv[1] + '/model.onnx', sys.argv[2] + '/model.onnx')")
    return {"steps": [{"external": {"command": [_step_python(), "-c", script, "{in}", "{out}",
                                                str(step_s), tag]}}], "evaluate": False}


def _worker(url: str, site: str, token: str, root: Path, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYMLAAS_")}
    (root / "data").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "tinymlaas.cli.main", "worker", "--server", url, "--site", site,
         "--token", token, "--data-root", str(root / "data"), "--work-dir",
         str(root / f"{name}-work")], env=env, start_new_session=True,
        stdout=(root / f"{name}.log").open("ab"), stderr=subprocess.STDOUT)


def _wait_alive(client: Client, site: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(client.get_site(site).workers) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"site {site}: {count} worker(s) did not start")
        time.sleep(0.2)
    time.sleep(1.5)  # their consumers subscribe after the first heartbeat


def _batch(client: Client, model: str, runs: int, step_s: float, tag: str,
           site: str | None) -> tuple[float, list[float]]:
    """Submit ``runs`` runs at once; the wall-clock time until the last ends, and the
    server's duration of each step."""
    started = time.monotonic()
    ids = [client.create_run(model, pipeline=_pipeline(step_s, f"{tag}-{i}"), site=site).id
           for i in range(runs)]
    while True:
        found = [client.get_run(i) for i in ids]
        if all(r.status in TERMINAL for r in found):
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    bad = [r for r in found if r.status != "succeeded"]
    if bad:
        raise SystemExit(f"{len(bad)} run(s) failed: {bad[0].error}")
    return elapsed, [r.steps[0].duration_s or 0.0 for r in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--step-s", type=float, default=2.0)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tinymlaas-bench-sites-"))
    root.chmod(0o755)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TINYMLAAS_HOME": str(root / "home"),
           "TINYMLAAS_BROKER_URL": args.broker, "TINYMLAAS_LOGIN_RATE_LIMIT": "1000",
           "TINYMLAAS_EXTERNAL_STEPS": "everyone", "TINYMLAAS_SERVER_RUNS": str(args.runs),
           "TINYMLAAS_WORKERS": "1"}
    server = start_server(env, port, output=(root / "server.log").open("ab"))
    workers: list[subprocess.Popen] = []
    try:
        with Client(url) as client:
            client.register("bench@example.com", PASSWORD)
            client.login("bench@example.com", PASSWORD)
            model = client.upload_model(write_digits_onnx(root / "digits.onnx"), name="m").id
            # In-process reference: the same step, one at a time, in the server's processes.
            _batch(client, model, 1, args.step_s, "warm-local", None)
            local_s = statistics.median(
                _batch(client, model, 1, args.step_s, f"local-{i}", None)[1][0]
                for i in range(3))
            results: dict[str, Any] = {}
            for count in (1, 2):
                site = client.create_site(f"bench-{count}")
                for n in range(count):
                    workers.append(_worker(url, site.name, site.token, root, f"w{count}-{n}"))
                _wait_alive(client, site.name, count)
                # One run per worker at once: each starts its fork server (the libraries
                # steps import) before the measured batch.
                _batch(client, model, count, args.step_s, f"warm-{count}", site.name)
                if count == 1:  # one step alone at the site, three times
                    site_s = statistics.median(
                        _batch(client, model, 1, args.step_s, f"alone-{i}", site.name)[1][0]
                        for i in range(3))
                elapsed, steps = _batch(client, model, args.runs, args.step_s,
                                        f"site-{count}", site.name)
                results[f"{count}_worker"] = {"wall_s": round(elapsed, 3),
                                              "runs_per_min": round(args.runs / elapsed * 60, 2),
                                              "step_s_median": round(statistics.median(steps),
                                                                     3)}
                for worker in workers:  # the next phase's site has workers of its own
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(timeout=60)
                workers.clear()
            speedup = results["1_worker"]["wall_s"] / results["2_worker"]["wall_s"]
            overhead_ms = (site_s - local_s) * 1000
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
        stop_server(server)
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "runs": args.runs, "step_s": args.step_s, "broker": args.broker.split("@")[-1],
              "local_step_s": round(local_s, 3), "site_step_s": round(site_s, 3), **results,
              "speedup_2_workers": round(speedup, 3),
              "dispatch_overhead_ms": round(overhead_ms, 1), "goals": GOALS}
    print(f"{args.runs} runs of one {args.step_s:g} s step each")
    print(f"{'workers':>8} {'wall s':>8} {'runs/min':>9} {'step s (median, queued too)':>28}")
    for count in (1, 2):
        row = results[f"{count}_worker"]
        print(f"{count:>8} {row['wall_s']:>8.2f} {row['runs_per_min']:>9.1f} "
              f"{row['step_s_median']:>28.3f}")
    print(f"speedup with 2 workers: {speedup:.2f}x (goal >= {GOALS['speedup_2_workers']}x)")
    print(f"dispatch overhead per step: {overhead_ms:.0f} ms over the in-process step "
          f"({local_s:.3f} s) (goal < {GOALS['dispatch_overhead_ms']} ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
