"""A pipeline is checked against its target when the run is created: a step that cannot
work for the device (or without one) is refused up front, naming the step and the reason,
as 422 from the API and exit 2 from the CLI; no run is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline
from tinymlaas.errors import IncompatibleChainError

SIGNED = {"name": "signed", "evaluate": False, "steps": ["package-c", "sign-image"]}


def test_sign_image_needs_a_cortex_m_device_that_fits_its_slots(services,
                                                                tmp_path: Path) -> None:
    model = services.add_model(write_digits_onnx(tmp_path / "m.onnx"), "m")
    cases = [
        (None, SIGNED, "step 2 (sign-image) cannot run for a run without a device: "
                       "it builds firmware for the run's device"),
        ("esp32-s3-devkitc", SIGNED, "step 2 (sign-image) cannot run for esp32-s3-devkitc: "),
        ("raspberry-pi-pico", {**SIGNED, "steps": [
            "package-c", {"sign-image": {"slot_offset": 64 * 1024 * 1024}}]},
         "step 2 (sign-image) cannot run for raspberry-pi-pico: slot_offset"),
    ]
    for device, pipeline, message in cases:
        with pytest.raises(IncompatibleChainError) as refused:
            services.create_run(Pipeline.model_validate(pipeline), model=model.id,
                                device=device)
        assert refused.value.message.startswith(message), refused.value.message
        assert refused.value.details["step"] == 2 and refused.value.http_status == 422
    assert "xtensa-lx7" in _message(services, model, "esp32-s3-devkitc")
    assert services.list_runs() == []
    ok = services.create_run(Pipeline.model_validate(SIGNED), model=model.id,
                             device="raspberry-pi-pico")
    assert ok.device == "raspberry-pi-pico"


def _message(services, model, device: str) -> str:
    with pytest.raises(IncompatibleChainError) as refused:
        services.create_run(Pipeline.model_validate(SIGNED), model=model.id, device=device)
    return refused.value.message


def test_cli_refuses_with_exit_2(cli, tmp_path: Path) -> None:
    assert cli("models", "add", write_digits_onnx(tmp_path / "m.onnx"), "--name", "m")[0] == 0
    pipeline = tmp_path / "signed.yaml"
    pipeline.write_text("name: signed\nevaluate: false\nsteps: [package-c, sign-image]\n")
    code, _, err = cli("run", pipeline, "--model", "m")
    assert code == 2 and "step 2 (sign-image)" in err and "Cortex-M device" in err
    code, out, _ = cli("runs", "list", "--json")
    assert code == 0 and out.strip() == "[]"
