"""Write ``docs/benchmarks.md`` from a real run: nothing in it is copied by hand.

It runs, in a fresh data directory, the demo (train the CNN, the five demo pipelines, the
comparison against the float32 ONNX baseline) and ``bench/engine.py`` (overhead per step,
cached rerun, static int8), and, given ``.onnx`` models with ``.tflite`` twins,
``bench/installers.py`` (C bundles on the host and in QEMU against TensorFlow Lite Micro).
The page says when and where it was made. JSON of the same figures goes next to it.

Usage::

    python bench/report.py [--models model.onnx ...] [--engine-repeats 5]
        [--out docs/benchmarks.md] [--json bench/results/report.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # bench/installers.py

#: (script, what it measures, where the figures are)
SCRIPTS = [
    ("bench/report.py", "writes this page: the demo, `bench/engine.py` and, given models, "
     "`bench/installers.py`", "this page"),
    ("bench/engine.py", "platform overhead per step, cached reruns, static int8 on the demo "
     "CNN", "below"),
    ("bench/installers.py model.onnx ...", "C bundles: `make host` and `make qemu` against "
     "TensorFlow Lite Micro, ELF against estimate", "below, when models were given"),
    ("bench/techniques.py", "every compression technique and useful chain; `optimize` with a "
     "1-point budget", "[techniques.md](techniques.md#measured-on-the-demo-cnn)"),
    ("bench/compiler.py [model.onnx ...]", "generated C against TFLite Micro and ONNX Runtime: "
     "latency, arena, ELF flash and RAM", "[compiler.md](compiler.md#benchmark)"),
    ("bench/api.py", "server reads and run submissions under 100 concurrent clients, SQLite "
     "and PostgreSQL side by side", "below, with `--api`; [api.md](api.md#performance)"),
    ("bench/ota.py", "an over-the-air rollout in two waves to 50 simulated devices polling the "
     "DDI API: time to finish, poll latency, failures, bytes", "below, with `--ota`"),
]


def _versions() -> str:
    found = []
    for package in ("torch", "onnxruntime", "onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{package} {metadata.version(package)}")
    return ", ".join(found)


def run_demo(home: Path) -> dict[str, Any]:
    """The demo in ``home``: its comparison rows (ratios against the float32 baseline)."""
    os.environ["TINYMLAAS_HOME"] = str(home)
    from tinymlaas.cli.demo import run_demo as demo
    from tinymlaas.config import get_settings
    from tinymlaas.service import Services

    get_settings.cache_clear()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_ids = demo()
    seconds = time.perf_counter() - started
    services = Services()
    try:
        rows = [row.model_dump(mode="json")
                for row in services.compare(run_ids, reference=run_ids[0])]
    finally:
        services.close()
    return {"seconds": seconds, "rows": rows}


def run_engine(repeats: int, work: Path) -> dict[str, Any]:
    out = work / "engine.json"
    subprocess.run([sys.executable, str(ROOT / "engine.py"), "--repeats", str(repeats),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def run_installers(models: list[Path], work: Path) -> list[dict[str, Any]]:
    import installers

    rows = []
    for index, model in enumerate(models):
        rows.append(installers.measure(model.resolve(), "stm32-nucleo-l4r5zi", 8,
                                       work / f"installers-{index}"))
    return rows


def run_api(work: Path) -> dict[str, Any]:
    out = work / "api.json"
    subprocess.run([sys.executable, str(ROOT / "api.py"), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def run_ota(work: Path) -> dict[str, Any]:
    out = work / "ota.json"
    subprocess.run([sys.executable, str(ROOT / "ota.py"), "--json", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def render_ota(ota: dict[str, Any]) -> list[str]:
    """The section of ``bench/ota.py``'s figures (its JSON)."""
    import ota as ota_bench

    setup, meta, results = ota["parameters"], ota["meta"], ota["results"]
    cpu, alone = results["cpu"], results["poll_alone_ms"]
    workers = f"{setup['workers']} process{'es' if setup['workers'] > 1 else ''}"
    return ["## Over-the-air rollout (`python bench/ota.py`)", "",
            f"Measured on {meta['when']} ({meta['cpus']} CPUs, load average "
            f"{meta['load']:.1f} when it started). `tinymlaas serve` ({workers}, "
            f"{setup['database']}) on 127.0.0.1 and {setup['devices']} simulated devices "
            "(asyncio tasks on httpx, one connection each, on the same CPUs) that enroll with "
            f"their one-time codes and poll the DDI API every {setup['poll_s']:g} s. A "
            "`package-python` run of the digits model is deployed to their group in waves "
            f"{', '.join(f'{w} %' for w in setup['waves'])}; each device downloads every "
            "artifact, checks its sha256 and size, verifies the signed manifest and its own "
            "ticket with the release key it got at enrollment, and reports each stage up to "
            "`committed`. Poll latency is measured on the client side over every poll from "
            f"the deploy on. Goal: {ota['goal']['text']}.", "",
            ota_bench.table(ota), "",
            f"From the deploy to the end the server used {cpu['server_s']:.1f} CPU seconds in "
            f"{cpu['window_s']:.1f} s ({cpu['server_s'] / cpu['window_s']:.0%} of one CPU) "
            f"and the simulated devices {cpu['devices_s']:.1f}. One device polling alone "
            f"once the rollout had ended was answered in {alone['p50']:.1f} ms (p50); poll "
            "latency above that is mostly time spent waiting behind other requests and for the "
            "CPUs, which the server, the devices and anything else on the machine share.", ""]


def render_api(api: dict[str, Any]) -> list[str]:
    """The section of ``bench/api.py``'s figures (its JSON)."""
    import api as api_bench

    setup, goals = api["setup"], api["goals"]
    return ["## API under load (`python bench/api.py`)", "",
            f"`tinymlaas serve --workers {setup['workers']}` on 127.0.0.1, "
            f"{setup['clients']} concurrent clients (httpx, asyncio, on the same CPUs), "
            f"{setup['read_duration_s']:.0f} s of reads of each kind, "
            f"{setup['submissions']} run submissions. Goals: "
            f"{goals['reads_per_s']} reads/s, p99 under {goals['p99_ms']} ms, "
            f"{goals['submissions_per_s']} submissions/s without errors.", "",
            api_bench.table(api), ""]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def render(report: dict[str, Any]) -> str:
    from tinymlaas.domain.units import human_bytes

    meta = report["meta"]
    lines = ["# Benchmarks", "",
             f"Generated by `python bench/report.py` on {meta['when']} on {meta['machine']} "
             f"({meta['cpus']} CPUs, load average {meta['load']:.1f} when it started, Python "
             f"{meta['python']}, {meta['versions']}), one inference thread. Do not edit this "
             "page: run the script again. Tests never "
             "assert times; these scripts are where speed and memory are measured, and each "
             "prints a table and writes JSON to `bench/results/`.", "",
             "| script | what it measures | details |", "|---|---|---|",
             *(f"| `{script}` | {what} | {where} |" for script, what, where in SCRIPTS), ""]
    engine = report["engine"]
    lines += [f"## Engine (`python bench/engine.py --repeats {engine['repeats']}`)", "",
              "**Overhead per step.** One engine step (fork a worker from the warm fork "
              "server, send the JSON job, run the transformer, store the output by content, "
              "record the step) against the same library calls made directly in a warm "
              "process, on the demo CNN's float32 ONNX. Medians; goal: under 10% or under "
              "150 ms.", "",
              "| step | library call | engine step | overhead | goal |", "|---|---|---|---|---|"]
    for row in engine["overhead"]:
        lines.append(f"| {row['step']} | {_ms(row['library_s'])} | {_ms(row['engine_s'])} | "
                     f"{row['overhead_s'] * 1000:+.0f} ms | "
                     f"{'met' if row['goal_met'] else 'missed'} |")
    cached = engine["cached_rerun"]
    lines += ["", f"**Cached rerun.** `export-onnx → fuse → quantize-static` with both "
              f"evaluations: first run {cached['first_run_s']:.2f} s; rerun of the whole "
              f"pipeline **{_ms(cached['cached_rerun_s'])}**. Goal: under 1 s, "
              f"{'met' if cached['goal_met'] else 'missed'}.", ""]
    q = engine["static_int8"]
    lines += ["**Static int8 on the demo CNN** (QDQ, per-channel, MinMax) against its float32 "
              "ONNX export, on the test split:", "",
              "| | accuracy | size | p50 latency |", "|---|---|---|---|",
              f"| float32 ONNX | {q['fp32_accuracy']:.2f}% | {human_bytes(q['fp32_bytes'])} | "
              f"{q['fp32_latency_ms']:.3f} ms |",
              f"| int8 | {q['int8_accuracy']:.2f}% | {human_bytes(q['int8_bytes'])} | "
              f"{q['int8_latency_ms']:.3f} ms |",
              f"| change | **{0.0 - q['accuracy_drop']:+.2f} points** (goal ≥ -0.5) | "
              f"**{q['size_ratio']:.2f}x smaller** (goal ≥ 3.5x) | "
              f"{q['fp32_latency_ms'] / q['int8_latency_ms']:.2f}x faster |", ""]
    demo = report["demo"]
    lines += ["## The demo (`make demo`)", "",
              f"The demo (train the CNN, register it, run the baseline and four pipelines with "
              f"evaluations, print the comparison) took **{demo['seconds']:.0f} s** after "
              "installation; the goal is under 3 minutes. Its table, with ratios against the "
              "float32 ONNX baseline (latency is ONNX Runtime on this host for every run):", "",
              "| run | accuracy | size | size × | p50 ms | speed × |", "|---|---|---|---|---|---|"]
    for row in demo["rows"]:
        lines.append(f"| {row['name']} | {row['accuracy']:.2f}% | "
                     f"{human_bytes(row['file_bytes'])} | {row['size_ratio']:.2f}x | "
                     f"{row['host']['latency_ms']:.3f} | {row['host']['latency_ratio']:.2f}x |")
    if report.get("installers"):
        lines += ["", "## C bundles against TensorFlow Lite Micro "
                  "(`python bench/installers.py model.onnx ...`)", "",
                  "Each model goes through `[package-c]` with `evaluate: false` and no dataset "
                  "for the device, is exported, and on random inputs the line `make host "
                  "INPUT=x.bin` prints is compared with `make qemu` (Cortex-M4 in QEMU) and "
                  "with TensorFlow Lite Micro's interpreter on the model's `.tflite` twin, "
                  "byte for byte. Flash and RAM are the ELF of the model linked for the "
                  "target against the estimate in the bundle's manifest.", ""]
        import installers

        lines.append(installers.table(report["installers"]))
    if report.get("api"):
        lines += ["", *render_api(report["api"])]
    if report.get("ota"):
        lines += ["", *render_ota(report["ota"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", type=Path, default=[],
                        help=".onnx models with .tflite twins for the C bundle section")
    parser.add_argument("--engine-repeats", type=int, default=5)
    parser.add_argument("--api", action="store_true",
                        help="also run bench/api.py (SQLite and PostgreSQL)")
    parser.add_argument("--ota", action="store_true",
                        help="also run bench/ota.py (a rollout to 50 simulated devices)")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "report.json")
    args = parser.parse_args(argv)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.system()} {platform.machine()}", "cpus": os.cpu_count(),
            "python": platform.python_version(), "versions": _versions(),
            "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="tinymlaas-report-") as tmp:
        work = Path(tmp)
        print("engine benchmark...", file=sys.stderr)
        engine = run_engine(args.engine_repeats, work)
        print("demo...", file=sys.stderr)
        demo = run_demo(work / "demo-home")
        print("C bundles...", file=sys.stderr) if args.models else None
        installers = run_installers(args.models, work) if args.models else []
        print("API...", file=sys.stderr) if args.api else None
        api = run_api(work) if args.api else None
        print("OTA rollout...", file=sys.stderr) if args.ota else None
        ota = run_ota(work) if args.ota else None
    report = {"meta": meta, "engine": engine, "demo": demo, "installers": installers,
              "api": api, "ota": ota}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(report), encoding="utf-8")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
