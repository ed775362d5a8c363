"""Small builders for test inputs (ONNX graphs, zips, datasets)."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.api.testing import PYTHONS, sandbox_python


def need_service(available: bool, what: str) -> None:
    """Fail, naming what is missing, when a service or tool the test needs is not there.

    ``make test`` installs every tool the suite needs and the machine runs its services, so
    a missing one is a broken setup, never a reason to pass quietly.
    """
    if not available:
        pytest.fail(f"{what} is required by this test but is not available "
                    "(`make test` installs the tools; start the service)")


@functools.cache
def step_python() -> str:
    """A Python that command steps can run (see :func:`sandbox_python`)."""
    exe = sandbox_python()
    if exe is None:
        pytest.fail(f"none of {PYTHONS} can be run by the sandbox user 'nobody'; command "
                    "steps need a Python it can execute")
    return exe


def linear_onnx(path: Path, features: int = 64, classes: int = 10, seed: int = 0) -> Path:
    """A one-layer classifier ``softmax-free logits = x @ W + b`` with a dynamic batch."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(classes, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, outputs: int, seed: int = 0) -> Path:
    """A 16 -> 32 -> ``outputs`` MLP (Gemm ``fc1``, Relu, Gemm ``fc2``), random weights."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in (
        ("w1", rng.normal(size=(16, 32)) / 4), ("b1", rng.normal(size=32) / 10),
        ("w2", rng.normal(size=(32, outputs)) / 6), ("b2", rng.normal(size=outputs) / 10))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_embedding(services, tmp_path: Path, samples: int, seed: int) -> tuple:
    """A linear 32 -> 16 'embedding' model and a dataset of ``samples`` random vectors for
    it (task embedding), registered in ``services``."""
    from tinymlaas.domain import Task

    model = services.add_model(linear_onnx(tmp_path / "embed.onnx", 32, 16, seed=seed),
                               "embed")
    X = np.random.default_rng(seed + 1).normal(size=(samples, 32)).astype(np.float32)
    np.savez(tmp_path / "sentences.npz", X=X, y=np.zeros(len(X), np.float32))
    dataset = services.add_dataset(str(tmp_path / "sentences.npz"), "sentences",
                                   task=Task.embedding)
    return model, dataset


def small_cnn_onnx(path: Path, seed: int = 0) -> Path:
    """A digits-shaped CNN, 1x1x8x8 -> Conv+Relu -> MaxPool -> Conv+Relu -> Flatten -> Gemm
    -> 10 logits, with a dynamic batch (four kernel calls once compiled: Flatten is a view)."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[init("w1", (4, 1, 3, 3)), init("b1", (4,)), init("w2", (8, 4, 3, 3)),
                     init("b2", (8,)), init("w3", (10, 128)), init("b3", (10,))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None,
              compress: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, target)
    return path


def png_bytes(value: int, size: int = 8) -> bytes:
    import io

    from PIL import Image

    img = Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def other_digits_onnx(path: Path) -> Path:
    """The digits classifier of ``write_digits_onnx`` with one bias changed: another model
    (another content hash) with the same inputs and outputs."""
    from tinymlaas.api.testing import write_digits_onnx

    model = onnx.load(str(write_digits_onnx(path)))
    bias = model.graph.initializer[1]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 1.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(path))
    return path
