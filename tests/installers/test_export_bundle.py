"""The installer path a user walks, through the CLI: an int8 model with int8 input (the shape
of the MLPerf Tiny models), a pipeline ``[package-c]`` that does not evaluate, run with no
dataset for a board; the export unpacks a bundle whose ``make host`` and ``make qemu`` print
the same line, the compiler's own output. The device keys the step cache, and so does the
project's signing key: a rotation signs again, and nothing before it reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from installer_models import int8_input_model

from helpers import need_service
from tinymlaas.compiler import HostModel, compile_onnx

TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "make", "cc")


def _make(bundle: Path, *args: str) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(bundle), *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def _run(cli, pipeline: Path, device: str) -> dict:
    code, out, err = cli("run", pipeline, "--model", "tfl", "--device", device, "--json")
    assert code == 0, err
    run = json.loads(out)
    assert run["status"] == "succeeded" and run["dataset_id"] is None, run
    return run


def test_bundle_from_export_builds_and_runs_the_same_on_host_and_qemu(
        cli, services, tmp_path: Path) -> None:
    need_service(all(shutil.which(t) for t in TOOLS), "the C and Cortex-M toolchains, QEMU")
    model = int8_input_model(tmp_path / "tfl.onnx")
    assert cli("models", "add", model, "--name", "tfl")[0] == 0
    pipeline = tmp_path / "bundle.yaml"
    pipeline.write_text("name: bundle\nevaluate: false\nsteps: [package-c]\n")

    run = _run(cli, pipeline, "stm32-nucleo-l4r5zi")
    code, out, err = cli("export", run["id"], "--out", tmp_path / "out")
    assert code == 0, err
    bundle = tmp_path / "out" / "c-bundle"
    assert f"unpacked {bundle}/" in out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["device"] == "stm32-nucleo-l4r5zi"
    spec = manifest["inputs"][0]
    x = np.random.default_rng(7).integers(-128, 128, size=spec["shape"], dtype=np.int8)
    (bundle / "x.bin").write_bytes(x.tobytes())
    host = _make(bundle, "host", "INPUT=x.bin")
    emulated = _make(bundle, "qemu", "INPUT=x.bin")
    assert host == emulated and len(host.split()) == int(np.prod(manifest["outputs"][0]
                                                                 ["shape"]))
    expected = np.asarray(HostModel(compile_onnx(model, tmp_path / "c")).run(x)).ravel()
    assert [int(v) for v in host.split()] == expected.astype(int).tolist()

    # another board is another bundle; the first board again comes from the cache
    m7 = _run(cli, pipeline, "stm32f746-discovery")
    assert m7["steps"][0]["status"] == "succeeded" and m7["output_sha"] != run["output_sha"]
    again = _run(cli, pipeline, "stm32-nucleo-l4r5zi")
    assert again["steps"][0]["status"] == "cached" and again["output_sha"] == run["output_sha"]

    # signing: cached until the project's key is rotated
    signed = tmp_path / "signed.yaml"
    signed.write_text("name: signed\nevaluate: false\nsteps: [package-c, sign-image]\n")
    first = _run(cli, signed, "stm32-nucleo-l4r5zi")
    assert [s["status"] for s in _run(cli, signed, "stm32-nucleo-l4r5zi")["steps"]] == \
        ["cached", "cached"]
    assert cli("keys", "rotate", "--yes")[0] == 0
    rotated = _run(cli, signed, "stm32-nucleo-l4r5zi")
    assert [s["status"] for s in rotated["steps"]] == ["cached", "succeeded"]
    fingerprints = [services.run_packages(services.get_run(r["id"]))[-1]
                    .manifest["key_fingerprint_sha256"] for r in (first, rotated)]
    assert fingerprints[1] == services.signing_key().fingerprint != fingerprints[0]
