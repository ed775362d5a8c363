"""Benchmark of the C bundle installer against TensorFlow Lite Micro, the way a user gets it.

For each ``.onnx`` model given (int8 or float, with its ``.tflite`` twin beside it, such as
the MLPerf Tiny models): register it in a fresh data directory, run the pipeline
``[package-c]`` with ``evaluate: false`` and no dataset for a device, ``tinymlaas export`` the
run, then on random inputs compare the line that ``make host INPUT=x.bin`` prints with
``make qemu INPUT=x.bin`` (Cortex-M4 in QEMU) and with TensorFlow Lite Micro's host
interpreter on the twin, byte for byte. Also reports the ELF's flash and RAM against the
estimate in the manifest, and the time of each stage.

Usage::

    python bench/installers.py model.onnx [...] [--inputs 8] [--device stm32-nucleo-l4r5zi]
        [--json bench/results/installers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent


def _make(bundle: Path, *args: str) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(bundle), *args], capture_output=True,
                          text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"make {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


def _tflm_line(twin: Path, x: np.ndarray) -> str:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(twin), arena_size=4 << 20)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    out = interpreter.get_output(0).ravel()
    if out.dtype.kind == "f":
        return " ".join(f"{float(v):.9g}" for v in out)
    return " ".join(str(int(v)) for v in out)


def bundle_for(model: Path, device: str, work: Path) -> tuple[Path, float]:
    """Register, run ``[package-c]`` without a dataset, export; the unpacked bundle."""
    os.environ["TINYMLAAS_HOME"] = str(work / "home")
    from tinymlaas.config import get_settings
    from tinymlaas.domain import Pipeline
    from tinymlaas.service import Services

    get_settings.cache_clear()
    services = Services()
    try:
        registered = services.add_model(model, "bench")
        pipeline = Pipeline.model_validate({"name": "bundle", "evaluate": False,
                                            "steps": ["package-c"]})
        started = time.perf_counter()
        run = services.execute_run(services.create_run(pipeline, model=registered.id,
                                                       device=device).id)
        seconds = time.perf_counter() - started
        if run.status.value != "succeeded":
            raise RuntimeError(f"{model.name}: {run.error}")
        services.export_run(run.id, work / "out")
    finally:
        services.close()
    return work / "out" / "c-bundle", seconds


def measure(model: Path, device: str, count: int, work: Path) -> dict:
    twin = model.with_suffix(".tflite")
    bundle, package_s = bundle_for(model, device, work)
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    rng = np.random.default_rng(0)
    row: dict = {"model": model.name, "device": device, "package_s": round(package_s, 3),
                 "inputs": count, "host_eq_qemu": 0, "host_eq_tflm": None,
                 "elf": manifest.get("elf"),
                 "estimate": manifest.get("memory", {}).get("estimate", {})}
    started = time.perf_counter()
    _make(bundle, "host", "firmware")
    row["build_s"] = round(time.perf_counter() - started, 3)
    if twin.is_file():
        row["host_eq_tflm"] = 0
    qemu_s = 0.0
    for i in range(count):
        if spec["dtype"] == "int8":
            x = rng.integers(-128, 128, size=spec["shape"], dtype=np.int8)
        else:
            x = rng.uniform(0, 1, size=spec["shape"]).astype(spec["dtype"])
        (bundle / "x.bin").write_bytes(x.tobytes())
        host = _make(bundle, "host", "INPUT=x.bin")
        started = time.perf_counter()
        emulated = _make(bundle, "qemu", "INPUT=x.bin")
        qemu_s += time.perf_counter() - started
        row["host_eq_qemu"] += host == emulated
        if twin.is_file():
            row["host_eq_tflm"] += host == _tflm_line(twin, x)
        if i == 0:
            row["first_line"] = host
    row["qemu_s_per_input"] = round(qemu_s / max(count, 1), 3)
    return row


def table(rows: list[dict]) -> str:
    head = ("| model | device | host = QEMU | host = TFLM | ELF flash / estimate | "
            "ELF RAM / estimate | package | build | QEMU run |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        elf, est = r.get("elf") or {}, r.get("estimate") or {}
        elf = elf if elf.get("measured") else {}
        flash = (f"{elf.get('flash_bytes', 0):,} / {est.get('flash_bytes', 0):,} B"
                 if elf else "not measured")
        ram = (f"{elf.get('ram_bytes', 0):,} / {est.get('ram_bytes', 0):,} B"
               if elf else "not measured")
        tflm = ("no twin" if r["host_eq_tflm"] is None
                else f"{r['host_eq_tflm']}/{r['inputs']}")
        lines.append(f"| {r['model']} | {r['device']} | {r['host_eq_qemu']}/{r['inputs']} | "
                     f"{tflm} | {flash} | {ram} | {r['package_s']:.2f} s | "
                     f"{r['build_s']:.2f} s | {r['qemu_s_per_input']:.2f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help=".onnx files (a .tflite twin "
                        "beside each is compared too)")
    parser.add_argument("--inputs", type=int, default=8, help="random inputs per model")
    parser.add_argument("--device", default="stm32-nucleo-l4r5zi")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "installers.json")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="tinymlaas-bench-") as tmp:
            print(f"{model.name}: packaging, building, comparing {args.inputs} inputs",
                  file=sys.stderr)
            rows.append(measure(model.resolve(), args.device, args.inputs, Path(tmp)))
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json.write_text(json.dumps({"host": meta, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if all(r["host_eq_qemu"] == r["inputs"] and r["host_eq_tflm"] in
                    (None, r["inputs"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
