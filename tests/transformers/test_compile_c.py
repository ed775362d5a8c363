"""compile-c in a pipeline: generated C evaluated like any model, checked on host and QEMU."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from helpers import need_service
from tinymlaas.domain import Pipeline, RunStatus


def _run(services, registered, steps, device=None):
    model, dataset = registered
    pipeline = Pipeline.model_validate({"name": "c", "steps": steps})
    created = services.create_run(pipeline, model=model.id, dataset=dataset.id, device=device)
    return services.execute_run(created.id)


def test_int8_c_matches_int8_onnx_and_runs_on_cortex_m(services, registered) -> None:
    need_service(shutil.which("arm-none-eabi-gcc") is not None
                 and shutil.which("qemu-system-arm") is not None,
                 "the Cortex-M toolchain (gcc-arm-none-eabi, qemu-system-arm)")
    onnx_run = _run(services, registered, ["export-onnx", "fuse", "quantize-static"])
    c_run = _run(services, registered,
                 ["export-onnx", "fuse", "quantize-static", {"compile-c": {"cortex_m": True}}],
                 device="stm32f746-discovery")
    assert c_run.status is RunStatus.succeeded, c_run.error
    compile_step = c_run.steps[3].metrics
    # the generated code computes exactly what the exact integer reference computes
    assert compile_step["verify_samples"] == 32
    assert compile_step["verify_exact_fraction"] == 1.0
    assert compile_step["verify_max_lsb_diff"] == 0.0
    # informational: within a step of the QDQ graph as ONNX specifies it
    assert compile_step["ort_within_1lsb"] >= 0.99
    # the ELF: weights within a few KB of the planner's constants, RAM = arena + a little
    assert compile_step["elf_flash_bytes"] >= compile_step["const_bytes"]
    assert compile_step["code_overhead_bytes"] < 16 * 1024
    assert compile_step["arena_bytes"] <= compile_step["elf_ram_bytes"] \
        <= compile_step["arena_bytes"] + 4096
    assert compile_step["qemu_max_abs_diff_to_host"] == 0.0
    # evaluated like any other model: same accuracy as the int8 ONNX it came from
    result, reference = c_run.result, onnx_run.result
    assert abs(result["accuracy"] - reference["accuracy"]) <= 0.5
    assert result["top1_agreement"] >= 98.0
    assert result["latency_ms_p50"] > 0 and result["arena_bytes"] == compile_step["arena_bytes"]
    assert result["file_bytes"] == compile_step["const_bytes"] < reference["file_bytes"]
    fit = result["fit"]
    assert fit["fits"] and fit["device"] == "stm32f746-discovery"
    assert fit["ram_needed_bytes"] < 16 * 1024 and fit["flash_margin_pct"] > 50


def test_float_c_agrees_with_onnx_runtime(services, registered) -> None:
    run = _run(services, registered, ["export-onnx", "compile-c"])
    assert run.status is RunStatus.succeeded, run.error
    metrics = run.steps[1].metrics
    assert metrics["verify_max_rel_err"] < 1e-6 and metrics["verify_max_lsb_diff"] is None
    assert metrics["ort_max_rel_err"] < 1e-4
    assert run.result["top1_agreement"] == 100.0
    assert run.result["max_abs_diff"] < 1e-3


def test_step_fails_below_the_fidelity_bar(run_transformer, digits_onnx, monkeypatch) -> None:
    from tinymlaas.compiler.reference import Reference
    from tinymlaas.compiler.verify import output_lsb
    from tinymlaas.errors import StepFailedError

    qdq = run_transformer("quantize-static", digits_onnx).path
    passed = run_transformer("compile-c", qdq, verify_samples=32).metrics
    assert passed["verify_exact_fraction"] == 1.0 and passed["verify_max_lsb_diff"] == 0.0
    model = onnx.load(str(qdq))
    lsb = output_lsb(model)
    assert lsb is not None
    exact_run = Reference.run

    def two_steps_off(self: Reference, *inputs: np.ndarray) -> list[np.ndarray]:
        outputs = exact_run(self, *inputs)
        outputs[0].flat[0] += np.float32(2 * lsb)  # a deliberately wrong reference
        return outputs

    monkeypatch.setattr(Reference, "run", two_steps_off)
    name = model.graph.output[0].name
    with pytest.raises(StepFailedError, match=rf"output '{name}': 99\.69% of 320 elements "
                                              r"exact, max 2 LSB off") as info:
        run_transformer("compile-c", qdq, verify_samples=32)
    assert "exact integer reference" in info.value.message
    assert info.value.details["outputs"][0]["max_lsb_diff"] == 2.0


def test_bad_compile_params_are_rejected_before_running(services, registered) -> None:
    from tinymlaas.errors import InvalidInputError

    model, dataset = registered
    pipeline = Pipeline.model_validate({"steps": ["export-onnx",
                                                  {"compile-c": {"name": "my model"}}]})
    with pytest.raises(InvalidInputError, match="name: Value error, must be a C identifier"):
        services.create_run(pipeline, model=model.id, dataset=dataset.id)
