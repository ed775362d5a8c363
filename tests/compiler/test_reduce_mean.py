"""ReduceMean: any axes, ``keepdims``, opset 13 (``axes`` attribute) and 18 (``axes`` input),
int8 QDQ around it, ONNX's own node cases and a PyTorch CNN with ``AdaptiveAvgPool2d``,
all compiled to C and compared with ONNX Runtime (int8: bit for bit with the exact
reference, within a step of the graph as ONNX specifies it)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from compiler_models import quantize_qdq
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.reference import Reference
from tinymlaas.compiler.verify import agreement, reference_outputs
from tinymlaas.errors import UnsupportedModelError


def _reduce_mean(shape: list[int], axes: list[int] | None, keepdims: int, opset: int,
                 **attrs: int) -> onnx.ModelProto:
    inits, inputs = [], ["x"]
    if axes is not None and opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs.append("axes")
    elif axes is not None:
        attrs["axes"] = axes  # type: ignore[assignment]
    node = helper.make_node("ReduceMean", inputs, ["y"], name="mean", keepdims=keepdims,
                            **attrs)
    graph = helper.make_graph(
        [node], "reduce_mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9)


# (shape, axes, keepdims, opset, extra attributes, kernels the code calls)
CASES = {
    "spatial-keepdims-13": ([2, 3, 4, 5], [2, 3], 1, 13, {}, {"tm_gap_f32"}),
    "spatial-18": ([2, 3, 4, 5], [-2, -1], 0, 18, {}, {"tm_gap_f32"}),
    "last-axis": ([3, 7], [-1], 0, 18, {}, {"tm_gap_f32"}),
    "channels": ([2, 6, 4, 5], [1], 1, 13, {}, {"tm_reduce_mean_f32"}),
    "first-axis": ([3, 2, 2], [0], 0, 18, {}, {"tm_reduce_mean_f32"}),
    "two-runs": ([2, 3, 4, 5], [0, 2], 0, 13, {}, {"tm_reduce_mean_f32"}),
    "mixed-runs": ([2, 3, 4, 5], [1, 3], 1, 18, {}, {"tm_gap_f32", "tm_reduce_mean_f32"}),
    "size-one-axis": ([2, 1, 4, 6], [1, 2, 3], 1, 18, {}, {"tm_gap_f32"}),
    "all-axes-13": ([2, 3, 4], None, 1, 13, {}, {"tm_gap_f32"}),
    "all-axes-empty-18": ([2, 3, 4], [], 1, 18, {}, {"tm_gap_f32"}),
    "no-op-18": ([2, 3, 4], [], 1, 18, {"noop_with_empty_axes": 1}, {"tm_copy2d"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_reduce_mean_axes_and_keepdims(case: str, tmp_path: Path) -> None:
    shape, axes, keepdims, opset, attrs, kernels = CASES[case]
    model = _reduce_mean(shape, axes, keepdims, opset, **attrs)
    result = compile_onnx(model, tmp_path, name="rm", simplify=False)
    assert set(result.kernel_calls) == kernels
    x = np.random.default_rng(3).normal(1.0, 2.0, size=shape).astype(np.float32)
    got = HostModel(result).run(x)
    (ref,) = reference_outputs(model, x)
    if attrs.get("noop_with_empty_axes"):
        expected = x
    else:
        expected = np.mean(x, axis=tuple(axes) if axes else None, keepdims=bool(keepdims))
    assert got.shape == ref.shape == expected.shape
    assert agreement(got, ref).max_rel_err <= 1e-5
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_runtime_axes_are_refused_by_node_name(tmp_path: Path) -> None:
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="dynamic_mean")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                      helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedModelError) as caught:
        compile_onnx(model, tmp_path, name="rm", simplify=False)
    assert caught.value.details["nodes"] == ["dynamic_mean"]
    assert "axes" in caught.value.message
    assert not (tmp_path / "rm.c").exists()


def _qdq_mean(axes: list[int], relu: bool) -> onnx.ModelProto:
    """int8 in -> DQ -> ReduceMean [-> Relu] -> Q -> int8 out (opset 13)."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s_in"),
             numpy_helper.from_array(np.array(-7, np.int8), "z_in"),
             numpy_helper.from_array(np.array(0.02, np.float32), "s_out"),
             numpy_helper.from_array(np.array(3, np.int8), "z_out")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "z_in"], ["xf"]),
             helper.make_node("ReduceMean", ["xf"], ["m"], name="qmean", axes=axes,
                              keepdims=1)]
    last = "m"
    if relu:
        nodes.append(helper.make_node("Relu", ["m"], ["r"]))
        last = "r"
    nodes.append(helper.make_node("QuantizeLinear", [last, "s_out", "z_out"], ["y"]))
    graph = helper.make_graph(
        nodes, "qmean", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)


@pytest.mark.parametrize(("axes", "relu", "kernels"), [
    ([2, 3], False, {"tm_qavgpool_s8s8"}),
    ([2, 3], True, {"tm_qavgpool_s8s8"}),
    ([1], False, {"tm_dequantize_s8", "tm_reduce_mean_f32", "tm_quantize_s8"}),
])
def test_int8_qdq_reduce_mean(axes: list[int], relu: bool, kernels: set[str],
                              tmp_path: Path) -> None:
    model = _qdq_mean(axes, relu)
    result = compile_onnx(model, tmp_path, name="qrm", simplify=False)
    assert set(result.kernel_calls) == kernels
    assert result.outputs[0].dtype == "int8" and result.outputs[0].zero_point == 3
    x = np.random.default_rng(4).integers(-128, 128, (64, 1, 4, 5, 6)).astype(np.int8)
    got = np.stack([HostModel(result).run(sample) for sample in x])
    exact = Reference(model, simplify=False)
    np.testing.assert_array_equal(got, np.stack([exact.run(sample)[0] for sample in x]))
    ref = np.stack([reference_outputs(model, sample, optimize=False)[0] for sample in x])
    figures = agreement(got, ref)
    assert figures.fraction_within_1lsb == 1.0
    assert figures.exact_fraction >= 0.95
    if relu:
        assert got.min() >= 3  # Relu clamps at the output zero point


def _onnx_node_cases() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        return [c for c in collect_testcases(None) if c.name.startswith("test_reduce_mean_")]


@pytest.mark.parametrize("case", _onnx_node_cases(), ids=lambda c: c.name)
def test_onnx_node_cases_with_constant_axes(case, tmp_path: Path) -> None:
    """ONNX's own ReduceMean cases feed ``axes`` at run time; with the case's axes as an
    initializer they compile and match the expected outputs."""
    for index, (inputs, expected) in enumerate(case.data_sets):
        model = onnx.ModelProto()
        model.CopyFrom(case.model)
        data, axes = inputs
        del model.graph.input[1]
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(axes), "axes"))
        result = compile_onnx(model, tmp_path / str(index), name="case", simplify=False)
        got = HostModel(result).run(data)
        np.testing.assert_allclose(got, expected[0], rtol=case.rtol, atol=case.atol)
        assert got.shape == expected[0].shape


def _torch_cnn(path: Path) -> Path:
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 16, 3, padding=1, stride=2)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(16 + 8, 10)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            a = torch.relu(self.c1(t))
            b = torch.relu(self.c2(a))
            return self.fc(torch.cat([self.pool(b).flatten(1),
                                      a.mean(dim=(2, 3), keepdim=False)], 1))

    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=True,
                      external_data=False, verbose=False,
                      dynamic_shapes={"t": {0: torch.export.Dim("batch")}})
    return path


def test_torch_cnn_with_adaptive_avg_pool(digits, tmp_path: Path) -> None:
    path = _torch_cnn(tmp_path / "gap_cnn.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("ReduceMean") == 2 and "GlobalAveragePool" not in ops
    x = digits[0][:200]
    result = compile_onnx(path, tmp_path / "fp32", name="gapcnn")
    got = HostModel(result).run(x)
    (ref,) = reference_outputs(path, x)
    assert agreement(got, ref).max_rel_err <= 1e-4
    assert np.mean(got.argmax(1) == ref.argmax(1)) == 1.0
    # ONNX Runtime's static quantization of the same model compiles too.
    qpath = quantize_qdq(path, tmp_path / "gap_cnn_int8.onnx", digits[0][:64],
                         per_channel=True)
    qresult = compile_onnx(qpath, tmp_path / "int8", name="gapcnn8")
    assert qresult.quantized
    assert qresult.kernel_calls["tm_qavgpool_s8s8"] == 1  # DQ -> ReduceMean -> Q
    qgot = HostModel(qresult).run(x)
    np.testing.assert_array_equal(qgot, Reference(qpath).run(x)[0])
    (qref,) = reference_outputs(qpath, x, optimize=False)
    assert agreement(qgot, qref).max_rel_err <= 0.05
    assert np.mean(qgot.argmax(1) == qref.argmax(1)) >= 0.97


def test_reduce_mean_on_cortex_m4_matches_host(tmp_path: Path) -> None:
    from helpers import need_service
    from tinymlaas.compiler.cortex_m import run_cortex_m, toolchain_missing

    missing = toolchain_missing()
    need_service(not missing, " and ".join(missing) or "the Arm toolchain")
    model = _reduce_mean([2, 3, 4, 5], [1, 3], 1, 18)
    result = compile_onnx(model, tmp_path / "src", name="rm", simplify=False)
    assert set(result.kernel_calls) == {"tm_gap_f32", "tm_reduce_mean_f32"}
    x = np.random.default_rng(5).normal(size=(2, 3, 4, 5)).astype(np.float32)
    build = run_cortex_m(result, [x[None]], tmp_path / "fw")
    qemu = build.outputs[0][0]
    np.testing.assert_allclose(qemu, HostModel(result).run(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(qemu, x.mean(axis=(1, 3), keepdims=True), rtol=1e-5, atol=1e-6)
