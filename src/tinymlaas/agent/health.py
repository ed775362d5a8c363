"""The health check of a trial install, run before it is committed.

For a python-wheel the installed package runs in a child process (``python -I``, its own
process group, a timeout) with the slot's ``content/`` first on ``sys.path``: it imports the
wheel's package, calls ``predict`` on the golden NPZ's ``input/<name>`` arrays (one mapping
of name to array, as the package's ``predict`` takes) and compares each output with
``output/<i>`` within ``atol + rtol * |expected|``; the median latency of ``repeats`` calls
must stay under ``max_latency_ms`` when the manifest sets one. Nothing of the agent is
imported in that process: a broken or hostile package cannot change the agent's state.

Other kinds (c-bundle, docker-context) cannot be run by the agent: their health check is
that every file of the release is in the slot and hashes as the signed manifest says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinymlaas.contracts.ota import HealthSpec

__all__ = ["PROBE", "HealthResult", "check_files", "check_python"]

#: Default seconds the health check's process may take.
HEALTH_TIMEOUT_S = 120.0

#: The child's program: argv = content folder, import name, golden NPZ, spec JSON.
PROBE = r"""
import importlib, json, statistics, sys, time
content, package, golden, spec = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, content)
import numpy as np

def done(ok, detail, latency=None):
    print(json.dumps({"ok": ok, "detail": detail, "latency_ms": latency}))
    sys.exit(0)

try:
    module = importlib.import_module(package)
except Exception as exc:
    done(False, f"cannot import {package}: {type(exc).__name__}: {exc}")
if not module.__file__ or not module.__file__.startswith(content):
    done(False, f"{package} was imported from {module.__file__}, not from the slot")
if golden == "-":
    done(True, f"{package} imports (no golden data to run)")
with np.load(golden, allow_pickle=False) as npz:
    inputs = {k[len("input/"):]: npz[k] for k in npz.files if k.startswith("input/")}
    expected = [npz[f"output/{i}"] for i in range(len(npz.files)) if f"output/{i}" in npz.files]
if not inputs or not expected:
    done(False, "the golden file has no input/<name> or output/<i> arrays")
times = []
try:
    for _ in range(max(1, int(spec["repeats"]))):
        start = time.perf_counter()
        result = module.predict(inputs)
        times.append((time.perf_counter() - start) * 1000.0)
except Exception as exc:
    done(False, f"predict failed: {type(exc).__name__}: {exc}")
outputs = list(result) if isinstance(result, (list, tuple)) else [result]
latency = statistics.median(times)
if len(outputs) != len(expected):
    done(False, f"predict gave {len(outputs)} outputs, the golden file has {len(expected)}",
         latency)
for i, (got, want) in enumerate(zip(outputs, expected)):
    got = np.asarray(got)
    if got.shape != want.shape:
        done(False, f"output {i} has shape {list(got.shape)}, expected {list(want.shape)}",
             latency)
    got, want = got.astype(np.float64), want.astype(np.float64)
    bound = spec["atol"] + spec["rtol"] * np.abs(want)
    err = np.abs(got - want)
    if not np.all(err <= bound):
        worst = float(np.max(err - bound))
        done(False, f"output {i} differs from the golden output by up to {worst:.3g} over "
                    f"atol {spec['atol']} + rtol {spec['rtol']} * |expected|", latency)
limit = spec.get("max_latency_ms")
if limit is not None and latency > limit:
    done(False, f"median latency {latency:.3f} ms is over the limit of {limit} ms", latency)
done(True, f"{len(expected)} output(s) match the golden data; median latency "
           f"{latency:.3f} ms over {len(times)} calls", latency)
"""


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str
    latency_ms: float | None = None


def check_python(content: Path, import_name: str, golden: Path | None, spec: HealthSpec, *,
                 timeout_s: float = HEALTH_TIMEOUT_S,
                 started: Callable[[], None] | None = None) -> HealthResult:
    """Run the wheel's package from ``content`` on the golden data in a child process.

    Args:
        started: Called once the child runs (where crash injection kills the agent).
    """
    argv = [sys.executable, "-I", "-c", PROBE, str(content), import_name,
            str(golden) if golden is not None else "-",
            json.dumps(spec.model_dump(mode="json"))]
    child = subprocess.Popen(argv, cwd=content, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                  "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if started is not None:
        started()
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return HealthResult(False, f"the health check took more than {timeout_s:g} s")
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
        return HealthResult(bool(report["ok"]), str(report["detail"]), report.get("latency_ms"))
    except (IndexError, ValueError, KeyError, TypeError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] \
            or [f"exit {child.returncode}"]
        return HealthResult(False, f"the health check process failed: {tail[0][:300]}")


def check_files(problems: list[str]) -> HealthResult:
    """The health of a release the agent cannot run: its files are present and intact."""
    if problems:
        return HealthResult(False, "the slot is incomplete: " + "; ".join(problems[:5]))
    return HealthResult(True, "every file of the release is installed and hashes as the "
                              "signed manifest says (this kind is not run on the device)")
