"""``bench/onnx_node_tests.py``: ONNX node tests through the compiler, the pass fraction per
operator, written into a generated section of a Markdown page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "onnx_node_tests.py"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False)


def _write_case(root: Path, name: str, node: onnx.NodeProto, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None:
    """One case in ONNX's on-disk layout: model.onnx and test_data_set_0/*.pb."""
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)],
                              ir_version=9)
    data = root / name / "test_data_set_0"
    data.mkdir(parents=True)
    onnx.save(model, str(root / name / "model.onnx"))
    for prefix, tensors in (("input", inputs), ("output", outputs)):
        for i, (key, value) in enumerate(tensors.items()):
            (data / f"{prefix}_{i}.pb").write_bytes(
                numpy_helper.from_array(value, key).SerializeToString())


def test_directory_cases_are_run_and_the_docs_section_is_replaced(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    pads = np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 0), (0, 2)], constant_values=0.0)
    cases = tmp_path / "node"
    # pads fed at run time, as in ONNX's own Pad tests: made a constant, it passes.
    _write_case(cases, "test_pad_runtime", helper.make_node("Pad", ["x", "pads"], ["y"]),
                {"x": x, "pads": pads}, {"y": padded})
    # A wrong expected output is reported as such, not as a pass.
    _write_case(cases, "test_pad_wrong", helper.make_node("Pad", ["x", "pads"], ["y"]),
                {"x": x, "pads": pads}, {"y": padded + 1})
    scales = np.array([1, 1, 2, 2], np.float32)
    _write_case(cases, "test_resize_linear",
                helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear"),
                {"x": x, "scales": scales}, {"y": np.zeros((1, 1, 6, 8), np.float32)})
    _write_case(cases, "test_resize_nearest",
                helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                                 coordinate_transformation_mode="asymmetric"),
                {"x": x, "scales": scales},
                {"y": np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)})
    page = tmp_path / "compiler.md"
    page.write_text("# Page\n\nbefore\n\n<!-- onnx-node-tests:begin -->\nold table\n"
                    "<!-- onnx-node-tests:end -->\n\nafter\n")
    report = tmp_path / "cases.json"
    proc = _script("--data-dir", str(cases), "--docs", str(page), "--json", str(report))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in proc.stdout.splitlines()}
    assert rows["Pad"] == "| Pad | 2 | 1 | 1 | 0 | 0 | 50% |"
    assert rows["Resize"] == "| Resize | 2 | 1 | 0 | 1 | 0 | 50% |"
    assert rows["**all**"] == "| **all** | 4 | 2 | 1 | 1 | 0 | 50% |"
    outcomes = {c["name"]: c for c in json.loads(report.read_text())["cases"]}
    assert outcomes["test_pad_runtime"]["outcome"] == "pass"
    assert outcomes["test_pad_runtime"]["detail"] == "parameters made constant: pads"
    assert outcomes["test_pad_wrong"]["outcome"] == "wrong"
    assert "linear" in outcomes["test_resize_linear"]["detail"]
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Page\n\nbefore\n")
    assert text.endswith("<!-- onnx-node-tests:end -->\n\nafter\n")
    assert rows["Pad"] in text and str(cases) in text


def test_parameters_kept_at_run_time_are_refused(tmp_path: Path) -> None:
    x = np.ones((1, 2, 2), np.float32)
    _write_case(tmp_path, "test_pad_kept",
                helper.make_node("Pad", ["x", "pads"], ["y"]),
                {"x": x, "pads": np.array([0, 0, 1, 0, 0, 1], np.int64)},
                {"y": np.pad(x, [(0, 0), (0, 0), (1, 1)])})
    proc = _script("--data-dir", str(tmp_path), "--runtime-parameters", "--show-failures")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| Pad | 1 | 0 | 0 | 1 | 0 | 0% |" in proc.stdout
    assert "test_pad_kept [Pad] refused:" in proc.stdout and "constant" in proc.stdout


def test_onnx_packaged_cases_by_name() -> None:
    proc = _script("--case", "test_constant_pad", "--case", "test_softmax_axis_0",
                   "--case", "test_resize_downsample_scales_nearest")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for op in ("Pad", "Softmax", "Resize"):
        assert f"| {op} | 1 | 1 | 0 | 0 | 0 | 100% |" in proc.stdout


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    proc = _script("--op", "NoSuchOp")
    assert proc.returncode == 2 and "does not support NoSuchOp" in proc.stderr
    proc = _script("--data-dir", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    page = tmp_path / "page.md"
    page.write_text("no markers\n")
    empty = tmp_path / "cases"
    x = np.ones((2, 2), np.float32)
    _write_case(empty, "test_relu", helper.make_node("Relu", ["x"], ["y"]), {"x": x},
                {"y": x})
    proc = _script("--data-dir", str(empty), "--docs", str(page))
    assert proc.returncode == 1 and "has no <!-- onnx-node-tests:begin -->" in proc.stderr
    assert page.read_text() == "no markers\n"
