"""Pad (constant, edge, reflect, wrap; negative pads crop) and nearest-neighbour Resize /
Upsample, float and int8 QDQ, compiled to C and compared with ONNX Runtime. Both only move
data, so the results are equal, not close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.compiler import HostModel, compile_onnx
from tinymlaas.compiler.verify import reference_outputs
from tinymlaas.errors import UnsupportedModelError

SHAPE = [2, 3, 5, 6]


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], opset: int,
           dtype: int = TensorProto.FLOAT, shape: list[int] = SHAPE) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9)


def _pad_model(mode: str, pads: list[int], value: float | None, opset: int = 19,
               axes: list[int] | None = None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    inputs = ["x", "pads", ""]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        inputs[2] = "value"
    if axes is not None:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs.append("axes")
    node = helper.make_node("Pad", inputs, ["y"], name="pad", mode=mode)
    return _model([node], inits, opset)


def _check_equal(model: onnx.ModelProto, x: np.ndarray, tmp_path: Path,
                 kernels: set[str] | None = None) -> np.ndarray:
    result = compile_onnx(model, tmp_path, name="op", simplify=False)
    if kernels is not None:
        assert set(result.kernel_calls) == kernels
    got = HostModel(result).run(x)
    (ref,) = reference_outputs(model, x)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    return got


X = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 2, 0, 0, 3, 1], [0, 1, 2, 0, 1, 0, 2, -2],
                                  [0, 0, -1, 2, 0, 0, 0, -3]])
def test_float_pad_modes(mode: str, pads: list[int], tmp_path: Path) -> None:
    got = _check_equal(_pad_model(mode, pads, 1.25), X, tmp_path, {"tm_remap_f32"})
    if mode == "constant" and pads[2] > 0:
        assert np.all(got[:, :, 0, :] == 1.25)


def test_pad_with_axes_input_and_opset_2_attributes(tmp_path: Path) -> None:
    _check_equal(_pad_model("constant", [2, 1], -3.0, opset=19, axes=[-1]), X,
                 tmp_path / "axes")
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0)
    _check_equal(_model([node], [], 10), X, tmp_path / "v2")


def test_zero_pads_are_free(tmp_path: Path) -> None:
    model = _pad_model("reflect", [0] * 8, None)
    result = compile_onnx(model, tmp_path, name="op", simplify=False)
    assert result.kernel_calls == {"tm_copy2d": 1}  # the output copy, no remap
    np.testing.assert_array_equal(HostModel(result).run(X), X)


def _resize(attrs: dict[str, object], scales: list[float] | None = None,
            sizes: list[int] | None = None, opset: int = 19,
            dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    inits, inputs = [], ["x", "", "", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        inputs[2] = "scales"
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        inputs[3] = "sizes"
    node = helper.make_node("Resize", inputs[:4 if sizes is not None else 3], ["y"],
                            name="resize", mode="nearest", **attrs)
    return _model([node], inits, opset, dtype)


TRANSFORMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
              "half_pixel_symmetric"]
ROUNDINGS = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_float_resize_nearest_scales(transform: str, rounding: str, tmp_path: Path) -> None:
    attrs = {"coordinate_transformation_mode": transform, "nearest_mode": rounding}
    _check_equal(_resize(attrs, scales=[1, 1, 2.0, 1.5]), X, tmp_path / "up",
                 {"tm_remap_f32"})
    _check_equal(_resize(attrs, scales=[1, 1, 0.8, 0.5]), X, tmp_path / "down")


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_float_resize_nearest_sizes(policy: str, tmp_path: Path) -> None:
    attrs = {"keep_aspect_ratio_policy": policy}
    _check_equal(_resize({**attrs, "axes": [2, 3]}, sizes=[9, 8]), X, tmp_path / "axes")
    _check_equal(_resize(attrs, sizes=[2, 3, 3, 10]), X, tmp_path / "all")


def test_upsample_and_opset_11_resize(tmp_path: Path) -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "scales")
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
    _check_equal(_model([node], [scales], 9), X, tmp_path / "up9")
    roi = numpy_helper.from_array(np.zeros(0, np.float32), "roi")
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    _check_equal(_model([node], [roi, scales], 11), X, tmp_path / "r11")


def _qdq(op: onnx.NodeProto, inits: list[onnx.TensorProto], opset: int) -> onnx.ModelProto:
    """int8 in -> DQ -> op -> Q -> int8 out, one scale and zero point."""
    inits = [*inits, numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(-7, np.int8), "z")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]), op,
             helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["y"])]
    return _model(nodes, inits, opset, TensorProto.INT8)


Q = np.random.default_rng(1).integers(-128, 128, SHAPE).astype(np.int8)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_int8_qdq_pad_stays_int8(mode: str, tmp_path: Path) -> None:
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(0.4, np.float32), "value")]
    op = helper.make_node("Pad", ["xf", "pads", "value"], ["yf"], mode=mode)
    model = _qdq(op, inits, 19)
    got = _check_equal(model, Q, tmp_path, {"tm_remap_s8"})
    if mode == "constant":  # 0.4 / 0.05 - 7 = 1
        assert np.all(got[:, :, 0, :] == 1)


def test_int8_qdq_resize_stays_int8(tmp_path: Path) -> None:
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    op = helper.make_node("Resize", ["xf", "", "scales"], ["yf"], mode="nearest")
    _check_equal(_qdq(op, inits, 19), Q, tmp_path, {"tm_remap_s8"})


def test_unsupported_resize_and_pad_are_refused_by_node(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError) as caught:
        compile_onnx(_linear_resize(), tmp_path / "a", name="op", simplify=False)
    assert caught.value.details["nodes"] == ["resize"]
    assert "nearest" in caught.value.message
    runtime_pads = _model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad")], [], 19)
    runtime_pads.graph.input.append(helper.make_tensor_value_info("p", TensorProto.INT64, [8]))
    with pytest.raises(UnsupportedModelError) as caught:
        compile_onnx(runtime_pads, tmp_path / "b", name="op", simplify=False)
    assert caught.value.details["nodes"] == ["pad"] and "pads" in caught.value.message


def _linear_resize() -> onnx.ModelProto:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear")
    return _model([node], [scales], 19)
