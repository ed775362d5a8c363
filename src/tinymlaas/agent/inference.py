"""Inference on the device: inputs the Studio asks the device to run on its committed release.

The controller base carries an ``inference`` link when the Studio queued a job. The agent
reads the job (``{"id", "samples", "inputs": <artifact>}``), downloads the inputs NPZ
(``input/<name>`` arrays, verified by sha256 and size), and runs them through the committed
python-wheel's ``predict`` one sample at a time, in a child process like the health check's
(the slot's ``content/`` on ``sys.path``, nothing of the agent imported), timing each call.
It posts ``{"latency_ms": [...], "outputs": "<base64 NPZ of output/<i>>"}`` to
``.../inference/{jobId}/result``; the Studio scores the outputs against the dataset.

Only a python-wheel release can be run; with none committed the job is left to the Studio
and the agent says why on stderr.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinymlaas.contracts.ota import DdiArtifact
from tinymlaas.errors import InvalidInputError, PayloadTooLargeError

if TYPE_CHECKING:
    from tinymlaas.agent.runner import Agent

__all__ = ["MAX_INPUT_BYTES", "RUNNER", "InferenceDone", "run_inference"]

#: The largest inputs file the agent downloads, and the largest outputs it posts.
MAX_INPUT_BYTES = 256 * 1024**2
MAX_OUTPUT_BYTES = 64 * 1024**2
INFERENCE_TIMEOUT_S = 600.0
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: The child's program: argv = content folder, import name, inputs NPZ, outputs NPZ.
RUNNER = r"""
import importlib, json, sys, time
content, package, inputs_path, outputs_path = sys.argv[1:5]
sys.path.insert(0, content)
import numpy as np
module = importlib.import_module(package)
with np.load(inputs_path, allow_pickle=False) as npz:
    inputs = {k[len("input/"):]: npz[k] for k in npz.files if k.startswith("input/")}
if not inputs:
    raise SystemExit("the inputs file has no input/<name> arrays")
count = min(len(a) for a in inputs.values())
latency, outputs = [], []
for i in range(count):
    sample = {name: array[i:i + 1] for name, array in inputs.items()}
    feed = next(iter(sample.values())) if len(sample) == 1 else sample
    start = time.perf_counter()
    result = module.predict(feed)
    latency.append((time.perf_counter() - start) * 1000.0)
    outputs.append([np.asarray(r) for r in (result if isinstance(result, (list, tuple))
                                            else [result])])
arrays = {f"output/{j}": np.concatenate([o[j] for o in outputs]) for j in range(len(outputs[0]))}
np.savez(outputs_path, **arrays)
print(json.dumps({"latency_ms": latency}))
"""


@dataclass(frozen=True)
class InferenceDone:
    job_id: str
    samples: int
    detail: str


def run_inference(agent: Agent, href: str) -> InferenceDone | None:
    """Run the job at ``href`` on the committed release and post its result; None when the
    device cannot run it (said on the log)."""
    work = agent.client.get_json(href, "inference job")
    job_id = str(work.get("id", "")) if isinstance(work, dict) else ""
    if not _JOB.fullmatch(job_id):
        raise InvalidInputError("the server sent an inference job without a usable id")
    inputs = DdiArtifact.model_validate(work.get("inputs"))
    if inputs.size > MAX_INPUT_BYTES:
        raise PayloadTooLargeError(f"inference inputs of {inputs.size} bytes are over the "
                                   f"{MAX_INPUT_BYTES} bytes this agent takes")
    committed = agent.state.committed
    if committed is None or committed.kind != "python-wheel" or not committed.import_name:
        agent.log(f"inference {job_id}: no python-wheel release is committed; only a "
                  "python-wheel can be run on this device")
        return None
    link = inputs.links.get("download-http")
    if link is None:
        raise InvalidInputError(f"inference {job_id}: the inputs have no download-http link")
    folder = agent.layout.downloads / f"inference-{job_id}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = agent.client.download(link.href, folder / "inputs.npz", size=inputs.size,
                                     sha256=inputs.hashes.sha256.lower())
        content = agent.layout.slot(committed.slot) / "content"
        out = folder / "outputs.npz"
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", RUNNER, str(content), committed.import_name,
             str(path), str(out)], cwd=content, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        try:
            stdout, stderr = child.communicate(timeout=INFERENCE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            agent.log(f"inference {job_id}: took more than {INFERENCE_TIMEOUT_S:g} s")
            return None
        if child.returncode != 0 or not out.is_file():
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            agent.log(f"inference {job_id}: the model failed: {tail[0][:300]}")
            return None
        latency = json.loads(stdout.decode().strip().splitlines()[-1])["latency_ms"]
        if out.stat().st_size > MAX_OUTPUT_BYTES:
            agent.log(f"inference {job_id}: the outputs are over {MAX_OUTPUT_BYTES} bytes")
            return None
        body = {"latency_ms": latency,
                "outputs": base64.b64encode(out.read_bytes()).decode()}
        agent.client.post_json(href.rstrip("/") + "/result", body, "inference result")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    detail = f"{len(latency)} samples on version {committed.version}"
    agent.log(f"inference {job_id}: {detail}")
    return InferenceDone(job_id, len(latency), detail)
