"""Comparisons never set two runtimes against each other, and keep the host and the device
apart: a compiled-C run's ratios are against the float32 model compiled the same way (not
ONNX Runtime), a PyTorch input's ONNX runs against its ONNX export, and the device verdict
says "unsupported ops: ..." when the device runtime lacks operators, not "does not fit"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Device, Pipeline, RunStatus
from tinymlaas.service.compare import comparison_row

NANO = "arduino-nano-33-ble-sense"
PIPELINES = {
    "static": [{"quantize-static": {"num_samples": 64}}],
    "dyn": ["quantize-dynamic"],
    "fp16": ["fp16"],
    "static-c": [{"quantize-static": {"num_samples": 64}}, {"compile-c": {"verify_samples": 8}}],
}


def _run(services, name: str, steps: list, model: str, device: str = NANO):
    run = services.create_run(Pipeline.model_validate({"name": name, "steps": steps}),
                              model=model, dataset="digits", device=device, name=name)
    done = services.execute_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    return done


@pytest.fixture
def onnx_runs(services, tmp_path: Path) -> dict:
    services.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg")
    services.add_dataset("digits")
    return {name: _run(services, name, steps, "logreg") for name, steps in PIPELINES.items()}


def test_every_ratio_is_within_one_runtime(services, onnx_runs: dict) -> None:
    runs = onnx_runs
    rows = {r.name: r for r in services.compare([r.id for r in runs.values()])}
    for name in ("static", "dyn", "fp16"):
        assert rows[name].host.runtime == rows[name].baseline.runtime == "onnxruntime", name
        assert runs[name].baseline["runtime"] == "onnxruntime"
        base, res = runs[name].baseline, runs[name].result
        assert rows[name].host.latency_ratio == pytest.approx(
            base["latency_ms_p50"] / res["latency_ms_p50"])
        assert rows[name].notes == []

    # the compiled run is measured against the float32 model compiled the same way
    compiled = runs["static-c"]
    row = rows["static-c"]
    assert compiled.result["runtime"] == compiled.baseline["runtime"] == "c"
    assert row.host.runtime == row.baseline.runtime == "c" and row.notes == []
    assert "arena_bytes" in compiled.baseline and "parameters" not in compiled.baseline
    # float32 constants in C: the 64x10 weights and 10 biases, 4 bytes each
    assert compiled.baseline["file_bytes"] == (64 * 10 + 10) * 4
    assert row.size_ratio == pytest.approx((64 * 10 + 10) * 4 / compiled.result["file_bytes"])
    assert row.host.latency_ratio == pytest.approx(
        compiled.baseline["latency_ms_p50"] / compiled.result["latency_ms_p50"])
    ort_baseline = runs["static"].baseline["latency_ms_p50"]
    assert row.host.latency_ratio != pytest.approx(
        ort_baseline / compiled.result["latency_ms_p50"])
    assert row.baseline.latency_ms == compiled.baseline["latency_ms_p50"] != ort_baseline

    # against a reference run in another runtime: no ratio, and a note that says why
    rows = services.compare([compiled.id, runs["dyn"].id], reference=runs["static"].id)
    across, within = rows
    assert across.size_ratio is None and across.host.latency_ratio is None
    assert across.host.memory_ratio is None and across.accuracy_change is not None
    assert "generated C" in across.notes[0] and "ONNX Runtime" in across.notes[0]
    assert within.host.latency_ratio is not None and within.notes == []


def test_device_verdicts(services, onnx_runs: dict) -> None:
    rows = {r.name: r for r in services.compare([r.id for r in onnx_runs.values()])}
    for name in ("static", "static-c"):
        device = rows[name].device
        assert device is not None and device.device == NANO and device.runtime == "c"
        assert device.verdict == "fits" and device.fits and device.label == "fits"
        assert device.memory_source == "compiler" and device.ram_limit_bytes == 256 * 1024
        assert device.arena_bytes is not None and device.io_bytes is not None
        assert device.ram_needed_bytes == device.arena_bytes + device.io_bytes  # c: no state
        assert device.flash_limit_bytes == 1024 * 1024
    # fp16 and dynamic int8 only lack operators in the C compiler: not a memory verdict
    fp16, dyn = rows["fp16"].device, rows["dyn"].device
    assert fp16 is not None and dyn is not None
    assert fp16.verdict == "unsupported ops" and "Cast" in fp16.unsupported_ops
    assert fp16.label == "unsupported ops: " + ", ".join(fp16.unsupported_ops)
    assert dyn.verdict == "unsupported ops" and not dyn.fits
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= set(dyn.unsupported_ops)
    assert dyn.label.startswith("unsupported ops: ") and "does not fit" not in dyn.label
    # both would fit by memory: the verdict is about operators only
    assert fp16.ram_needed_bytes < fp16.ram_limit_bytes
    assert dyn.flash_needed_bytes < dyn.flash_limit_bytes


def test_a_device_too_small_does_not_fit(services, tmp_path: Path) -> None:
    services.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg")
    services.add_dataset("digits")
    services.add_device(Device(name="tiny-board", arch="cortex-m0", clock_mhz=16, ram_kb=1,
                               flash_kb=8, runtimes=["c"], custom=True, project="default"))
    run = _run(services, "static", PIPELINES["static"], "logreg", device="tiny-board")
    (row,) = services.compare([run.id])
    device = row.device
    assert device is not None and device.verdict == "does not fit" and not device.fits
    assert device.unsupported_ops == [] and device.label == "does not fit"
    # flash: constants and the 16 KiB of C runtime code against 8 KiB
    assert device.flash_needed_bytes > device.flash_limit_bytes == 8 * 1024
    assert any("flash" in reason for reason in device.reasons)


class _Digits(torch.nn.Module):
    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights.T)))
            self.linear.bias.copy_(torch.from_numpy(bias.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


def test_a_pytorch_input_is_measured_through_its_onnx_export(services, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(write_digits_onnx(tmp_path / "logreg.onnx"))).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    module = _Digits(weights["W"], weights["b"]).eval()
    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 8, 8),)), str(path))
    services.add_model(path, "digits-torch", input_shape=[1, 8, 8])
    services.add_dataset("digits")
    fp16 = _run(services, "fp16", ["export-onnx", "fp16"], "digits-torch")
    compiled = _run(services, "c", ["export-onnx", {"compile-c": {"verify_samples": 0}}],
                    "digits-torch")

    # ONNX Runtime output against the input's ONNX export in ONNX Runtime, not eager torch
    assert fp16.result["runtime"] == fp16.baseline["runtime"] == "onnxruntime"
    exported = services.meta.get_artifact(fp16.steps[0].output_sha)
    assert fp16.baseline["file_bytes"] == exported.size_bytes
    # generated C against the export compiled the same way: the run's own output
    assert compiled.baseline["runtime"] == compiled.result["runtime"] == "c"
    assert compiled.baseline["file_bytes"] == compiled.result["file_bytes"]
    rows = {r.name: r for r in services.compare([fp16.id, compiled.id])}
    assert rows["c"].size_ratio == 1.0 and rows["c"].host.latency_ratio is not None
    assert rows["fp16"].size_ratio == pytest.approx(exported.size_bytes
                                                    / fp16.result["file_bytes"])


def test_rows_say_why_a_ratio_is_missing(services, tmp_path: Path) -> None:
    """A baseline the engine could only measure in another runtime (the float32 model does
    not compile): the row has no ratios and carries the engine's reason."""
    services.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg")
    run = services.create_run(Pipeline.model_validate({"steps": ["fuse"], "evaluate": False}),
                              model="logreg", name="c")
    model = services.meta.get_model(run.model_id)
    run.result = {"runtime": "c", "file_bytes": 100, "latency_ms_p50": 1.0, "accuracy": 90.0}
    run.baseline = {"runtime": "onnxruntime", "file_bytes": 400, "latency_ms_p50": 0.1,
                    "accuracy": 91.0, "note": "the float32 input model does not compile to "
                    "C: Sin is not supported"}
    row = comparison_row(run, model, run.baseline, "float32 input model", [])
    assert row.size_ratio is None and row.host.latency_ratio is None
    assert row.accuracy_change == pytest.approx(-1.0)
    assert len(row.notes) == 1 and "Sin is not supported" in row.notes[0]
