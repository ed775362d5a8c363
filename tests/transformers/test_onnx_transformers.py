"""The ONNX transformers on the digits CNN: real effects, measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tinymlaas.evaluation.runtime import OnnxRunner
from tinymlaas.evaluation.static import graph_stats


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def test_split(digits_access):
    return digits_access.split("test")


def _accuracy(path: Path, split) -> float:
    X, y = split
    return float(np.mean(OnnxRunner(path).predict(X).argmax(1) == y) * 100)


def test_export_keeps_the_accuracy(digits_onnx: Path, digits_cnn, test_split) -> None:
    model = onnx.load(str(digits_onnx))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert abs(_accuracy(digits_onnx, test_split) - digits_cnn[1]) < 0.01


def test_fuse_folds_batchnorm_and_keeps_outputs(run_transformer, digits_cnn, digits_onnx,
                                                test_split):
    from tinymlaas.domain import ArtifactKind

    raw = run_transformer("export-onnx", digits_cnn[0], ArtifactKind.torch_exported,
                          optimize=False).path
    assert "BatchNormalization" in _ops(raw)
    out = run_transformer("fuse", raw)
    assert "BatchNormalization" not in _ops(out.path)
    assert out.metrics["nodes_after"] < out.metrics["nodes_before"]
    X = test_split[0][:64]
    before, after = OnnxRunner(raw).predict(X), OnnxRunner(out.path).predict(X)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)


def test_torchscript_export(run_transformer, tmp_path: Path, test_split) -> None:
    import torch

    from tinymlaas.domain import ArtifactKind, TensorSpec

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    from tinymlaas.transformers.base import StepContext
    from tinymlaas.transformers.torch.export_onnx import ExportOnnx, ExportParams

    ctx = StepContext(input_path=path, input_kind=ArtifactKind.torchscript, params=ExportParams(),
                      out_dir=tmp_path, work_dir=tmp_path,
                      input_specs=[TensorSpec(name="x", shape=["N", 1, 8, 8], dtype="float32")])
    out = ExportOnnx().run(ctx).path
    X = test_split[0][:16]
    expected = module(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(OnnxRunner(out).predict(X), expected, rtol=1e-4, atol=1e-5)


def test_dynamic_int8_is_about_four_times_smaller(run_transformer, digits_onnx, test_split):
    out = run_transformer("quantize-dynamic", digits_onnx)
    ratio = digits_onnx.stat().st_size / out.path.stat().st_size
    assert ratio > 3.0
    assert "DynamicQuantizeLinear" in _ops(out.path) or "MatMulInteger" in _ops(out.path)
    assert _accuracy(out.path, test_split) >= _accuracy(digits_onnx, test_split) - 2.0


def test_static_int8_per_channel_qdq(run_transformer, digits_onnx, test_split):
    fused = run_transformer("fuse", digits_onnx).path
    out = run_transformer("quantize-static", fused, per_channel=True, num_samples=128)
    assert out.metrics["calibration_samples"] == 128
    model = onnx.load(str(out.path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weight_scales = [i for i in model.graph.initializer
                     if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] in (32, 64)]
    assert weight_scales, "per-channel weights have one scale per output channel"
    assert fused.stat().st_size / out.path.stat().st_size >= 3.5
    assert _accuracy(out.path, test_split) >= _accuracy(fused, test_split) - 1.0


def test_static_int8_qoperator_per_tensor(run_transformer, digits_onnx, test_split):
    fused = run_transformer("fuse", digits_onnx).path
    out = run_transformer("quantize-static", fused, format="qoperator", per_channel=False,
                          calibration="percentile", num_samples=64)
    ops = _ops(out.path)
    assert "QLinearConv" in ops and ("QLinearMatMul" in ops or "QGemm" in ops)
    assert _accuracy(out.path, test_split) >= _accuracy(fused, test_split) - 3.0


def test_keeping_op_types_in_float(run_transformer, digits_onnx):
    fused = run_transformer("fuse", digits_onnx).path
    out = run_transformer("quantize-static", fused, op_types_to_exclude=["Gemm"],
                          calibration="entropy", num_samples=32)
    model = onnx.load(str(out.path))
    gemm_inputs = {i for n in model.graph.node if n.op_type == "Gemm" for i in n.input}
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    float_weights = [i for i in model.graph.initializer if i.name in gemm_inputs
                     and i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2]
    assert float_weights, "the Gemm weights stay float32"
    assert any(produced_by.get(i) != "DequantizeLinear" for i in gemm_inputs)
    assert graph_stats(model).weight_bytes > graph_stats(onnx.load(str(
        run_transformer("quantize-static", fused, num_samples=32).path))).weight_bytes


def test_fp16_halves_the_weights(run_transformer, digits_onnx, test_split):
    out = run_transformer("fp16", digits_onnx)
    before = graph_stats(onnx.load(str(digits_onnx))).weight_bytes
    after = graph_stats(onnx.load(str(out.path))).weight_bytes
    assert 0.45 < after / before < 0.55
    onnx.checker.check_model(str(out.path))  # valid, topologically sorted graph
    X = test_split[0][:64]
    np.testing.assert_allclose(OnnxRunner(out.path).predict(X),
                               OnnxRunner(digits_onnx).predict(X), atol=0.05)
