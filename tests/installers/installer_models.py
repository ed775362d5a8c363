"""Tiny ONNX models for the installer tests: float, int8 QDQ, int8-input and two-in two-out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import helpers

__all__ = ["compiler_module", "float_model", "int8_input_model", "qdq_model", "reference",
           "two_io_model"]

_COMPILER_TESTS = Path(__file__).resolve().parents[1] / "compiler"


def compiler_module(name: str):
    """A module of the compiler tests (graph builders), loaded under a private name."""
    spec = importlib.util.spec_from_file_location(f"installers_{name}",
                                                  _COMPILER_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def float_model(path: Path) -> Path:
    """``y = x @ W + b``: float32 [N, 64] -> [N, 10]."""
    return helpers.linear_onnx(path, features=64, classes=10, seed=1)


def qdq_model(path: Path) -> Path:
    """The float model quantized by ONNX Runtime (static QDQ, int8 weights and activations)."""
    source = float_model(path.with_name(path.stem + "-float.onnx"))
    calibration = np.random.default_rng(2).normal(size=(16, 64)).astype(np.float32)
    return compiler_module("compiler_models").quantize_qdq(source, path, calibration,
                                                            per_channel=False)


def int8_input_model(path: Path) -> Path:
    """A tf2onnx-style int8 graph: int8 NHWC input with a symbolic batch, int8 output."""
    onnx.save(compiler_module("graphs").tflite_style_int8(seed=3), str(path))
    return path


def two_io_model(path: Path) -> Path:
    """Inputs ``a`` float32 [N, 3] and ``b`` float32 [N, 3]; outputs ``sum`` and ``scaled``."""
    gain = numpy_helper.from_array(np.array([0.5, -2.0, 3.25], np.float32), "gain")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Mul", ["a", "gain"], ["scaled"])],
        "two_io",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", 3])],
        initializer=[gain])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's outputs for the model file, as the packages run it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
