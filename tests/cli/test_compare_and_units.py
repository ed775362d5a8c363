"""``tinymlaas compare`` warns when runs start from different models, and every size the
CLI shows is in binary units (KiB, MiB), never "KB" or "MB"."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import other_digits_onnx
from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline

DECIMAL_UNITS = re.compile(r"\b(KB|MB|kB)\b")  # ("4 GB" is in product names)


def test_compare_warns_about_different_models(cli, services, tmp_path: Path) -> None:
    services.add_model(write_digits_onnx(tmp_path / "a.onnx"), "first")
    services.add_model(other_digits_onnx(tmp_path / "b.onnx"), "other")
    services.add_dataset("digits")
    pipeline = Pipeline.model_validate({"steps": ["fuse"], "evaluate": False})
    for model, name in (("first", "fused"), ("first", "fused-too"), ("other", "unrelated")):
        services.create_run(pipeline, model=model, dataset="digits", name=name)

    code, out, err = cli("compare", "fused", "fused-too")
    assert code == 0, err
    assert "warning" not in out.lower() and "fused-too" in out
    code, out, _ = cli("compare", "fused", "fused-too", "--json")
    assert code == 0 and [r["warnings"] for r in json.loads(out)] == [[], []]

    code, out, err = cli("compare", "fused", "unrelated")
    assert code == 0, err
    text = " ".join(out.split())
    warning = text.index("warning: these runs start from different models: first (")
    assert "not comparable" in text and warning < text.index("Comparison")
    code, out, _ = cli("compare", "fused", "unrelated", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["warnings"] == rows[1]["warnings"]
    assert "different models" in rows[0]["warnings"][0]
    assert rows[0]["source_model"] != rows[1]["source_model"]


def test_devices_show_binary_units(cli) -> None:
    code, out, err = cli("devices", "add", "lab-board", "--arch", "cortex-m4",
                         "--clock-mhz", "64", "--ram-kb", "256", "--flash-kb", "4096")
    assert code == 0, err
    code, out, _ = cli("devices", "list")
    assert code == 0 and "lab-board" in out
    row = next(line for line in out.splitlines() if "lab-board" in line)
    assert "256 KiB" in row and "4 MiB" in row
    assert "KiB" in out and not DECIMAL_UNITS.search(out), out
    code, out, _ = cli("devices", "show", "lab-board")
    assert code == 0 and "256 KiB" in out and "4 MiB" in out
    assert not DECIMAL_UNITS.search(out) and "4096" not in out
    code, out, _ = cli("devices", "show", "lab-board", "--json")
    assert json.loads(out)["ram_kb"] == 256 and json.loads(out)["flash_kb"] == 4096


def test_compare_shows_host_and_device_apart(cli, services, tmp_path: Path) -> None:
    services.add_model(write_digits_onnx(tmp_path / "a.onnx"), "logreg")
    services.add_dataset("digits")
    for name, steps in (("half", ["fp16"]), ("to-c", [{"compile-c": {"verify_samples": 4}}])):
        run = services.create_run(Pipeline.model_validate({"steps": steps}), model="logreg",
                                  dataset="digits", device="arduino-nano-33-ble-sense",
                                  name=name)
        assert services.execute_run(run.id).status.value == "succeeded"

    code, out, err = cli("compare", "half", "to-c")
    assert code == 0, err
    text = " ".join(out.split())
    assert text.index("Comparison") < text.index("Host (") < text.index("Device (")
    host = text[text.index("Host ("):text.index("Device (")]
    assert "onnxruntime" in host and " c " in host  # each run's runtime and its reference's
    device = text[text.index("Device ("):]
    assert "unsupported ops: Cast" in device and "fits" in device
    assert "does not fit" not in device and not DECIMAL_UNITS.search(out)

    code, out, _ = cli("compare", "half", "to-c", "--json")
    half, to_c = json.loads(out)
    assert code == 0 and half["host"]["runtime"] == half["baseline"]["runtime"] == "onnxruntime"
    assert to_c["host"]["runtime"] == to_c["baseline"]["runtime"] == "c"
    assert half["device"]["verdict"] == "unsupported ops"
    assert half["device"]["unsupported_ops"] == ["Cast"]
    assert to_c["device"]["verdict"] == "fits" and to_c["device"]["ram_limit_bytes"] == 262144
    # the compiled run against the float32 model compiled the same way: its own output here
    assert to_c["size_ratio"] == 1.0 and to_c["host"]["latency_ratio"] is not None

    # a reference in another runtime: no ratios, and a note that says why
    code, out, _ = cli("compare", "to-c", "--reference", "half")
    assert code == 0 and "note: to-c: no size, speed or memory ratio" in " ".join(out.split())
