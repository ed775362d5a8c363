"""QAT against static PTQ, ONNX-to-PyTorch conversion, and chains through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_torch_pruning import baseline, digits, run_step, test_accuracy

from tinymlaas.domain import ArtifactKind, Pipeline, PipelineStep
from tinymlaas.errors import IncompatibleChainError, UnsupportedModelError
from tinymlaas.formats.onnx_to_torch import onnx_to_torch
from tinymlaas.transformers.base import StepOutput

__all__ = ["baseline", "digits"]  # fixtures shared with the pruning tests


def test_qat_int8_is_at_least_as_accurate_as_static_ptq(digits_cnn, digits_onnx, digits,
                                                        tmp_path: Path) -> None:
    qat = run_step("qat", {"epochs": 1}, digits_cnn[0], digits, tmp_path / "qat")
    ptq = run_step("quantize-static", {}, digits_onnx, digits, tmp_path / "ptq")
    assert qat.kind is ArtifactKind.onnx
    model = onnx.load(str(qat.path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv_weights = [weights[n.input[0]] for n in model.graph.node
                    if n.op_type == "DequantizeLinear" and n.input[0] in weights
                    and weights[n.input[0]].ndim == 4]
    assert conv_weights and all(w.dtype == np.int8 for w in conv_weights)
    assert qat.path.stat().st_size < digits_onnx.stat().st_size / 3.5
    qat_metrics, ptq_metrics = test_accuracy(qat, digits), test_accuracy(ptq, digits)
    assert qat_metrics["accuracy"] >= ptq_metrics["accuracy"]
    session = ort.InferenceSession(str(qat.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})[0].shape == (3, 10)


def test_onnx_conversion_matches_onnxruntime(digits_onnx: Path, digits) -> None:
    x = digits.split("test")[0][:64]
    module = onnx_to_torch(digits_onnx)
    expected = ort.InferenceSession(str(digits_onnx)).run(None, {"input": x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_quantized_onnx_converts_back_exactly(digits_onnx: Path, digits, tmp_path) -> None:
    qdq = run_step("quantize-static", {}, digits_onnx, digits, tmp_path).path
    x = digits.split("test")[0][:64]
    # The QDQ graph as ONNX specifies it (DequantizeLinear -> float op -> QuantizeLinear):
    # with its graph optimizations, ONNX Runtime fuses the patterns into int8 kernels whose
    # results depend on the CPU (AVX2 without VNNI saturates 16-bit pair sums of u8 x s8
    # products), which is not what the converted model, or the graph, computes.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(str(qdq), options).run(None, {"input": x})[0]
    with torch.no_grad():
        got = onnx_to_torch(qdq)(torch.from_numpy(x)).numpy()
    assert float(np.mean(got.argmax(1) == expected.argmax(1))) == 1.0
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_unsupported_onnx_operator_is_named(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "x"], ["y"], equation="bi,bi->b", name="mix")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    path = tmp_path / "einsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(UnsupportedModelError, match=r"Einsum.*mix"):
        onnx_to_torch(path)


def _pipeline(*steps: tuple[str, dict]) -> Pipeline:
    return Pipeline(name="chain", steps=[PipelineStep(transformer=t, params=p)
                                         for t, p in steps])


def test_impossible_chains_are_rejected_before_running(services) -> None:
    engine = services.engine
    with pytest.raises(IncompatibleChainError, match="export-onnx"):
        engine.plan(_pipeline(("qat", {}), ("export-onnx", {})), ArtifactKind.torch_exported,
                    has_dataset=True)
    with pytest.raises(IncompatibleChainError, match="prune-structured"):
        engine.plan(_pipeline(("prune-structured", {}),), ArtifactKind.torchscript,
                    has_dataset=True)
    plan = engine.plan(_pipeline(("prune-structured", {}), ("distill", {}), ("qat", {}),
                                 ("quantize-static", {})), ArtifactKind.torch_exported,
                       has_dataset=True)
    assert [p.output_kind for p in plan] == [ArtifactKind.torch_exported] * 2 + \
        [ArtifactKind.onnx] * 2


def test_prune_then_onnx_int8_runs_through_the_engine(services, registered) -> None:
    model, dataset = registered
    run = services.create_run(_pipeline(("prune-structured", {"ratio": 0.5, "epochs": 2}),
                                        ("export-onnx", {}), ("quantize-static", {})),
                              model=model.id, dataset=dataset.id)
    run = services.execute_run(run.id)
    assert run.status.value == "succeeded", run.error
    assert run.steps[0].metrics["parameter_ratio"] <= 0.5
    assert run.result["accuracy"] >= run.baseline["accuracy"] - 2.5
    assert run.result["file_bytes"] < run.baseline["file_bytes"] / 6
    row = services.compare([run.id])[0]
    assert row.size_ratio > 6


def test_distill_after_pruning_chains(digits_cnn, digits, baseline, tmp_path: Path) -> None:
    pruned = run_step("prune-structured", {"ratio": 0.3, "epochs": 1}, digits_cnn[0], digits,
                      tmp_path / "a")
    student = run_step("distill", {"width": 0.7, "epochs": 3}, pruned.path, digits,
                       tmp_path / "b")
    assert student.metrics["parameters_after"] < 0.6 * pruned.metrics["parameters_after"]
    assert test_accuracy(StepOutput(student.path, student.kind), digits)["accuracy"] > 95.0
