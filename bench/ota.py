"""Benchmark of an over-the-air rollout: a real server (``tinymlaas serve`` in a subprocess
on 127.0.0.1) and ``--devices`` simulated devices that speak DDI over loopback.

The Studio side goes through the SDK: register, upload the tiny digits ONNX, run
``package-python`` on the builtin digits dataset, enroll the devices in group ``bench``
and, once every device has enrolled and polled, deploy the run in ``--waves`` (default
``10 100``: the first 10 % of the group, then the rest once those have all ended).

Each simulated device is an asyncio task with its own ``httpx.AsyncClient`` (one
connection), doing what the agent does, minus the install itself: trade its one-time code at
``POST /ddi/enroll``, poll ``GET /ddi/{tenant}/controller/v1/{id}`` every ``--poll-s``
seconds and, when a ``deploymentBase`` link appears, fetch it, download every artifact
(checking sha256 and size against the listing), verify the signed manifest and ticket with
the release key it got at enrollment (the ticket must name this device, this action and this
manifest; the manifest must list the files that were downloaded), and report the stages
``downloading``, ``downloaded``, ``verified``, ``installed``, ``switched``, ``health`` and
``committed`` (closed, success). A check that fails is reported ``refused`` (closed,
failure) and counts as a failed device.

Measured: seconds from the deploy call to the rollout's state ``finished`` (read right
after the last device's closing feedback is answered), each device's time from seeing its
offer to the answer of its ``committed`` feedback, the latency of every poll made from the
deploy on (client side: request sent to answer read) as p50/p95/p99, devices failed,
bytes downloaded and HTTP errors. The devices and the server share this machine's CPUs.

    .venv/bin/python bench/ota.py [--devices 50] [--poll-s 0.5] [--waves 10 100]
        [--workers 1] [--database-url URL] [--timeout-s 300] [--json bench/results/ota.json]

By default the server uses SQLite in a fresh home; with a PostgreSQL ``--database-url``
(e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``, trust auth) a new database is
created on that server for the run and dropped afterwards. Prints a table,
writes JSON, and exits 1 when a device failed or the rollout did not finish (the time
goals are reported, not enforced).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tinymlaas.api.testing import (
    free_port,
    postgres_database,
    start_server,
    stop_server,
    write_digits_onnx,
)
from tinymlaas.client import Client
from tinymlaas.contracts.ota import (
    AgentReport,
    DeploymentTicket,
    Feedback,
    FeedbackResult,
    FeedbackStatus,
    ReleaseManifest,
    load_public_key,
    verify_document,
)
from tinymlaas.errors import UnsafeInputError

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "ota.json"
PIPELINE = {"steps": ["package-python"], "evaluate": False}
PASSWORD = "bench password for the fleet"
GROUP = "bench"
#: What a device reports, in order, for an update that goes well; the last one closes it.
STAGES = ("downloading", "downloaded", "verified", "installed", "switched", "health",
          "committed")
#: Goals (docs/benchmarks.md): every device updated, the whole two-wave rollout within
#: ``rollout_s`` at the default 0.5 s polling, and polls as quick as the API's reads.
GOALS = {"failed": 0, "rollout_s": 30.0, "poll_p99_ms": 250.0}
#: Attempts of one request on a transport error or a 5xx answer.
ATTEMPTS = 3
#: Polls one device makes alone once the rollout has ended, for the cost of a poll unloaded.
ALONE_POLLS = 50

console = Console(width=120)


class _Refused(Exception):
    """A check of the deployment failed: the device installs nothing."""


@dataclass
class Tally:
    """What every simulated device adds to."""

    #: (perf_counter when sent, milliseconds to the answer) of every answered poll
    polls: list[tuple[float, float]] = field(default_factory=list)
    poll_errors: int = 0
    #: requests other than polls that failed (then retried) or ended in an error answer
    http_errors: int = 0
    bytes_downloaded: int = 0
    artifacts_downloaded: int = 0
    feedbacks: int = 0
    #: devices that have enrolled and answered a first poll
    polling: int = 0
    #: devices whose action has closed (success or failure)
    closed: int = 0
    #: device name: seconds from seeing the offer to the committed feedback's answer
    update_s: dict[str, float] = field(default_factory=dict)
    #: device name: why it refused or failed
    failures: dict[str, str] = field(default_factory=dict)


class SimulatedDevice:
    """One device speaking DDI: enroll, poll, and carry out each offered deployment."""

    def __init__(self, name: str, code: str, url: str, poll_s: float, tally: Tally,
                 ready: asyncio.Event, all_ready: int, done: asyncio.Event, total: int,
                 stop: asyncio.Event, seed: int) -> None:
        self.name, self.code, self.url, self.poll_s = name, code, url, poll_s
        self.tally, self.stop = tally, stop
        self.ready, self.all_ready, self.done, self.total = ready, all_ready, done, total
        self.random = random.Random(seed)
        self.handled: set[str] = set()
        self.identity: dict[str, Any] = {}
        self.base = ""

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=60) as http:
            answer = await self._send(http, "POST", "/ddi/enroll", json={"code": self.code})
            self.identity = answer.json()
            self.key = load_public_key(self.identity["public_key"])
            http.headers["Authorization"] = f"TargetToken {self.identity['token']}"
            self.base = base = (f"/ddi/{self.identity['tenant']}/controller/v1/"
                                f"{self.identity['controller_id']}")
            # devices do not poll in step: each starts at a random point of the interval
            await self._sleep(self.random.uniform(0, self.poll_s))
            polled = False
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    response = await http.get(base)
                    ms = (time.perf_counter() - began) * 1000
                    response.raise_for_status()
                except httpx.HTTPError:
                    self.tally.poll_errors += 1
                else:
                    self.tally.polls.append((began, ms))
                    if not polled:
                        polled = True
                        self.tally.polling += 1
                        if self.tally.polling == self.all_ready:
                            self.ready.set()
                    link = response.json().get("_links", {}).get("deploymentBase")
                    action = link["href"].rsplit("/", 1)[1] if link else None
                    if action is not None and action not in self.handled:
                        self.handled.add(action)
                        await self.deploy(http, base, action, link["href"])
                await self._sleep(max(0.0, began + self.poll_s - time.perf_counter()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _send(self, http: httpx.AsyncClient, method: str, url: str,
                    **kwargs: Any) -> httpx.Response:
        """``method url``; a transport error or a 5xx is retried, any error answer raises."""
        for attempt in range(ATTEMPTS):
            try:
                response = await http.request(method, url, **kwargs)
            except httpx.TransportError:
                self.tally.http_errors += 1
                if attempt + 1 == ATTEMPTS:
                    raise
                continue
            if response.status_code >= 500 and attempt + 1 < ATTEMPTS:
                self.tally.http_errors += 1
                continue
            if response.is_error:
                self.tally.http_errors += 1
                response.raise_for_status()
            return response
        raise AssertionError("unreachable")

    async def _download(self, http: httpx.AsyncClient, href: str) -> bytes:
        """An artifact, streamed (a retry starts it over)."""
        for attempt in range(ATTEMPTS):
            try:
                async with http.stream("GET", href) as response:
                    if response.status_code >= 500 and attempt + 1 < ATTEMPTS:
                        self.tally.http_errors += 1
                        continue
                    if response.is_error:
                        self.tally.http_errors += 1
                        response.raise_for_status()
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                    return bytes(data)
            except httpx.TransportError:
                self.tally.http_errors += 1
                if attempt + 1 == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _report(self, http: httpx.AsyncClient, base: str, action: str, stage: str, *,
                      version: int | None = None, detail: str = "") -> None:
        closed = stage in ("committed", "refused")
        body = Feedback(status=FeedbackStatus(
            execution="closed" if closed else "proceeding",
            result=FeedbackResult(finished=("success" if stage == "committed" else "failure")
                                  if closed else "none"),
            details=[detail] if detail else [],
            tinymlaas=AgentReport(stage=stage, version=version,  # type: ignore[arg-type]
                                  slot="b" if stage in STAGES[4:] else None)),
            timestamp=int(time.time() * 1000))
        await self._send(http, "POST", f"{base}/deploymentBase/{action}/feedback",
                         json=body.model_dump(mode="json", by_alias=True, exclude_none=True))
        self.tally.feedbacks += 1

    async def deploy(self, http: httpx.AsyncClient, base: str, action: str, href: str) -> None:
        """Carry out one offered deployment; the outcome goes to the server and the tally."""
        began = time.perf_counter()
        try:
            version = await self._install(http, base, action, href)
            await self._report(http, base, action, "committed", version=version,
                               detail=f"version {version} committed")
            self.tally.update_s[self.name] = time.perf_counter() - began
        except (_Refused, UnsafeInputError, ValidationError, KeyError, ValueError) as exc:
            self.tally.failures[self.name] = f"refused: {exc}"
            try:
                await self._report(http, base, action, "refused", detail=str(exc)[:500])
            except httpx.HTTPError as again:
                self.tally.failures[self.name] += f" (and the report failed: {again})"
        except httpx.HTTPError as exc:
            self.tally.failures[self.name] = f"HTTP: {exc}"
        self.tally.closed += 1
        if self.tally.closed == self.total:
            self.done.set()

    async def _install(self, http: httpx.AsyncClient, base: str, action: str,
                       href: str) -> int:
        """Download and verify the release of ``action``; report each stage; its version."""
        listing = (await self._send(http, "GET", href)).json()
        chunks = listing["deployment"]["chunks"]
        if len(chunks) != 1:
            raise _Refused(f"expected one chunk, got {len(chunks)}")
        artifacts = chunks[0]["artifacts"]
        await self._report(http, base, action, "downloading")
        files: dict[str, bytes] = {}
        for artifact in artifacts:
            data = await self._download(http, artifact["_links"]["download-http"]["href"])
            self.tally.bytes_downloaded += len(data)
            self.tally.artifacts_downloaded += 1
            name = artifact["filename"]
            if len(data) != artifact["size"]:
                raise _Refused(f"{name}: {len(data)} bytes, the listing says {artifact['size']}")
            if hashlib.sha256(data).hexdigest() != artifact["hashes"]["sha256"]:
                raise _Refused(f"{name}: sha256 differs from the listing")
            files[name] = data
        await self._report(http, base, action, "downloaded")

        if "manifest.json" not in files or "ticket.json" not in files:
            raise _Refused("the deployment has no manifest.json or ticket.json")
        manifest = ReleaseManifest.model_validate(
            verify_document(json.loads(files["manifest.json"]), self.key))
        ticket = DeploymentTicket.model_validate(
            verify_document(json.loads(files["ticket.json"]), self.key))
        me, tenant = self.identity["controller_id"], self.identity["tenant"]
        if ticket.controller_id != me or ticket.project != tenant:
            raise _Refused(f"the ticket is for {ticket.project}/{ticket.controller_id}, "
                           f"not {tenant}/{me}")
        if ticket.action_id != action:
            raise _Refused(f"the ticket is for action {ticket.action_id}, not {action}")
        if ticket.manifest_sha256 != hashlib.sha256(files["manifest.json"]).hexdigest():
            raise _Refused("the ticket names another manifest")
        if (ticket.release_id, ticket.version) != (manifest.release_id, manifest.version):
            raise _Refused("the ticket and the manifest name different releases")
        for file in manifest.files:
            got = files.get(file.name)
            if got is None or len(got) != file.size or \
                    hashlib.sha256(got).hexdigest() != file.sha256:
                raise _Refused(f"{file.name}: not downloaded as the signed manifest lists it")
        await self._report(http, base, action, "verified", version=manifest.version)
        for stage in ("installed", "switched", "health"):  # nothing is installed here
            await self._report(http, base, action, stage, version=manifest.version)
        return manifest.version


async def polls_alone(url: str, device: SimulatedDevice, count: int) -> list[float]:
    """Milliseconds of ``count`` polls one after the other from ``device`` alone: what a
    poll costs when nothing else is asked of the server."""
    headers = {"Authorization": f"TargetToken {device.identity['token']}"}
    latencies = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        for _ in range(count):
            began = time.perf_counter()
            (await http.get(device.base)).raise_for_status()
            latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` and its living children."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        return float("nan")
    return total


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _rollout(url: str, token: str, run_id: str, codes: dict[str, str],
                   args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Start the devices, deploy once they have all polled, wait for the rollout's end."""
    tally = Tally()
    ready, done, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    devices = [SimulatedDevice(name, code, url, args.poll_s, tally, ready, len(codes), done,
                               len(codes), stop, seed=index)
               for index, (name, code) in enumerate(sorted(codes.items()))]
    tasks = [asyncio.create_task(d.run(), name=d.name) for d in devices]
    client = Client(url, token)
    rollout: Any = None
    finished_s: float | None = None
    try:
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([waiting, *tasks], timeout=args.timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            broken = [t for t in tasks if t.done() and t.exception() is not None]
            raise SystemExit(f"{len(codes) - tally.polling} devices did not enroll and poll"
                             + (f": {broken[0].exception()!r}" if broken else ""))
        began = time.perf_counter()
        cpu = (cpu_seconds(server_pid), time.process_time())
        rollout = await asyncio.to_thread(client.deploy, GROUP, run=run_id, waves=args.waves)
        deploy_s = time.perf_counter() - began
        closed = asyncio.create_task(done.wait())
        while time.perf_counter() - began < args.timeout_s:
            # wake at once when the last device has closed; otherwise look every second
            # whether the rollout paused or ended without it
            await asyncio.wait({closed}, timeout=1.0)
            rollout = await asyncio.to_thread(client.rollout, rollout.id)
            if rollout.state.value == "finished":
                finished_s = time.perf_counter() - began
                break
            if rollout.state.value in ("paused", "cancelled"):
                break
        window_s = time.perf_counter() - began
        cpu = (cpu_seconds(server_pid) - cpu[0], time.process_time() - cpu[1])
        closed.cancel()
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        alone = await polls_alone(url, devices[0], ALONE_POLLS)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        client.close()
    crashed = {d.name: repr(o) for d, o in zip(devices, outcomes, strict=True)
               if isinstance(o, BaseException)}
    during = [ms for sent, ms in tally.polls if sent >= began]
    counts = dict(rollout.counts)
    succeeded = counts.get("succeeded", 0)
    updates = list(tally.update_s.values())
    return {
        "rollout_id": rollout.id, "state": rollout.state.value, "message": rollout.message,
        "counts": counts, "succeeded": succeeded,
        "failed": len(codes) - succeeded,
        "devices_refused_or_failed": len(tally.failures), "failures": tally.failures,
        "devices_crashed": crashed,
        "deploy_call_s": deploy_s, "rollout_s": finished_s,
        "device_update_s": {"p50": percentile(updates, 50), "max": max(updates, default=None)},
        "polls": len(during), "polls_total": len(tally.polls), "poll_errors": tally.poll_errors,
        "poll_ms": {"p50": percentile(during, 50), "p95": percentile(during, 95),
                    "p99": percentile(during, 99), "max": max(during, default=float("nan"))},
        "poll_alone_ms": {"polls": len(alone), "p50": percentile(alone, 50),
                          "p99": percentile(alone, 99)},
        "bytes_downloaded": tally.bytes_downloaded,
        "bytes_per_device": tally.bytes_downloaded / len(codes),
        "artifacts_downloaded": tally.artifacts_downloaded, "feedbacks": tally.feedbacks,
        "http_errors": tally.http_errors,
        # where the CPU went from the deploy to the end: the server's processes, and this
        # one (the devices and the SDK calls); they share the machine with anything else
        "cpu": {"window_s": window_s, "server_s": cpu[0], "devices_s": cpu[1]},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """On a fresh database (a new one next to a PostgreSQL ``--database-url``), measure."""
    url = args.database_url
    if url and url.startswith("postgresql"):
        with postgres_database(url, "tinymlaas_bench_ota") as fresh:
            return _measure(args, fresh)
    return _measure(args, url)


def _measure(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    """Start a server, prepare the run and the devices, and roll the run out to them."""
    setup: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        setup[what] = time.perf_counter() - clock
        clock = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="tinymlaas-bench-ota-") as tmp:
        env = {**os.environ, "TINYMLAAS_HOME": str(Path(tmp) / "home"),
               "TINYMLAAS_LOGIN_RATE_LIMIT": "1000"}
        env.pop("TINYMLAAS_DATABASE_URL", None)
        if database_url:
            env["TINYMLAAS_DATABASE_URL"] = database_url
        port = free_port()
        with ThreadPoolExecutor(1) as pool:  # train the tiny model while the server starts
            onnx = pool.submit(write_digits_onnx, Path(tmp) / "digits.onnx")
            try:
                server = start_server(env, port, workers=args.workers)
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from None
            lap("server_start_s")
            model_path = onnx.result()
            lap("model_s")
        url = f"http://127.0.0.1:{port}"
        try:
            with Client(url) as client:
                client.register("bench@example.com", PASSWORD)
                client.login("bench@example.com", PASSWORD)
                token = client.create_token("bench-ota").token
                model = client.upload_model(model_path)
                data = client.add_builtin_dataset("digits")
                lap("uploads_s")
                run = client.follow(client.create_run(model.id, data.id,
                                                      pipeline=PIPELINE).id)
                if run.status != "succeeded":
                    raise SystemExit(f"the package-python run {run.id} ended {run.status}")
                lap("run_s")
                console.print(f"enrolling {args.devices} devices...", style="dim")
                codes = {f"dev-{i:03d}": client.enroll_device(
                    f"dev-{i:03d}", groups=[GROUP]).enrollment_code
                    for i in range(args.devices)}
                lap("enroll_s")
            console.print(f"rolling out to {args.devices} simulated devices...", style="dim")
            results = asyncio.run(_rollout(url, token, run.id, codes, args, server.pid))
            return {**results, "setup": setup}
        finally:
            stop_server(server)


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    """Each goal: met or not."""
    rollout_s = results["rollout_s"]
    return {"failed": results["failed"] == GOALS["failed"] and results["state"] == "finished",
            "rollout_s": rollout_s is not None and rollout_s <= GOALS["rollout_s"],
            "poll_p99_ms": results["poll_ms"]["p99"] <= GOALS["poll_p99_ms"]}


def _kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, goal) of a result."""
    r, met = result["results"], result["goal_met"]

    def goal(key: str, text: str) -> str:
        return f"{text}: {'met' if met[key] else 'missed'}"

    polls, cpu = r["poll_ms"], r["cpu"]
    rollout = "did not finish" if r["rollout_s"] is None else f"{r['rollout_s']:.1f} s"
    return [
        ("deploy → rollout finished", rollout,
         goal("rollout_s", f"≤ {GOALS['rollout_s']:.0f} s")),
        ("devices succeeded / failed", f"{r['succeeded']} / {r['failed']}",
         goal("failed", "0 failed")),
        ("poll latency p50 / p95 / p99",
         f"{polls['p50']:.1f} / {polls['p95']:.1f} / {polls['p99']:.1f} ms",
         goal("poll_p99_ms", f"p99 ≤ {GOALS['poll_p99_ms']:.0f} ms")),
        ("polls (errors)", f"{r['polls']:,} ({r['poll_errors']})", ""),
        ("one device polling alone afterwards: p50 / p99",
         f"{r['poll_alone_ms']['p50']:.1f} / {r['poll_alone_ms']['p99']:.1f} ms", ""),
        ("one device: offer → committed p50 / max",
         "-" if r["device_update_s"]["max"] is None else
         f"{r['device_update_s']['p50']:.2f} / {r['device_update_s']['max']:.2f} s", ""),
        ("deploy call (release made from the run)", f"{r['deploy_call_s']:.2f} s", ""),
        ("downloaded", f"{_kib(r['bytes_downloaded'])} ({_kib(r['bytes_per_device'])} a device, "
                       f"{r['artifacts_downloaded']} artifacts)", ""),
        ("feedbacks (other HTTP errors)", f"{r['feedbacks']} ({r['http_errors']})", ""),
        ("CPU from deploy to end: server / devices",
         f"{cpu['server_s']:.1f} / {cpu['devices_s']:.1f} s in {cpu['window_s']:.1f} s", ""),
    ]


def table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (for docs/benchmarks.md)."""
    lines = ["| | measured | goal |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {goal} |" for name, value, goal in rows(result)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--poll-s", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--waves", type=int, nargs="+", default=[10, 100],
                        help="cumulative percentages of the group")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--database-url", help="the server's database (default: SQLite in "
                        "a fresh home); with a PostgreSQL URL, e.g. "
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test, a new database is "
                        "created on that server for the run and dropped afterwards")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="give up on the rollout after this long")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 10_000 or not 0.01 <= args.poll_s <= 60:
        parser.error("--devices is 1 to 10000 and --poll-s 0.01 to 60")
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "load": os.getloadavg()[0]}
    results = measure(args)
    database = "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite"
    result = {"bench": "ota", "meta": meta,
              "parameters": {"devices": args.devices, "poll_s": args.poll_s,
                             "waves": args.waves, "workers": args.workers,
                             "database": database, "group": GROUP, "pipeline": PIPELINE,
                             "timeout_s": args.timeout_s},
              "goal": {**GOALS, "text": goal_text(args)},
              "results": results}
    result["goal_met"] = verdict(results)
    result["pass"] = all(result["goal_met"].values())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    out = Table(title=f"OTA rollout: {args.devices} simulated devices polling every "
                      f"{args.poll_s:g} s, waves {','.join(map(str, args.waves))}, {database}, "
                      f"{args.workers} server process{'es' if args.workers > 1 else ''}, "
                      f"{os.cpu_count()} CPUs "
                      f"(load {meta['load']:.1f} at start)")
    for column in ("measure", "value", "goal"):
        out.add_column(column)
    for name, value, goal in rows(result):
        out.add_row(name, value, goal)
    console.print(out)
    console.print(f"Goal: {result['goal']['text']}")
    console.print(f"rollout {results['rollout_id']}: {results['state']} ({results['message']})")
    for name, why in sorted({**results["failures"], **results["devices_crashed"]}.items()):
        console.print(f"  {name}: {why}", style="red")
    console.print(f"{'PASS' if result['pass'] else 'FAIL'}: wrote {args.json}")
    complete = results["state"] == "finished" and results["failed"] == 0 \
        and not results["devices_crashed"]
    return 0 if complete else 1


def goal_text(args: argparse.Namespace) -> str:
    return (f"all {args.devices} devices updated (0 failed), the rollout finished within "
            f"{GOALS['rollout_s']:.0f} s of the deploy, poll p99 under "
            f"{GOALS['poll_p99_ms']:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
