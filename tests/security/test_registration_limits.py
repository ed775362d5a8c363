"""Registration runs the user's model once (to refuse one ONNX Runtime cannot run), so it
runs it in a child process under memory and CPU-time limits: a graph that asks for far
more memory than allowed is refused with a clear error, and the server process is
untouched."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.errors import UnsupportedModelError


def _greedy_model(path: Path, elements: list[int]) -> Path:
    """y = x + sum(ConstantOfShape(elements)): a few hundred bytes of file that ask ONNX
    Runtime for prod(elements) floats."""
    shape = numpy_helper.from_array(np.array(elements, dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                          value=numpy_helper.from_array(np.ones(1, np.float32))),
         helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
         helper.make_node("Add", ["x", "total"], ["y"])],
        "greedy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_asking_for_too_much_memory_is_refused(services, tmp_path: Path) -> None:
    services.settings.step_memory_mb = 2048
    huge = _greedy_model(tmp_path / "greedy.onnx", [50_000, 50_000, 4])  # 40 GB of floats
    with pytest.raises(UnsupportedModelError) as refused:
        services.add_model(huge, "greedy")
    message = refused.value.message
    assert message.startswith("ONNX Runtime cannot run greedy.onnx on example inputs "
                              "(x float32[1]): "), message
    assert "memory" in message.lower() or "allocat" in message.lower(), message
    assert services.list_models() == []
    # The same graph asking for 4 MB registers under the same limits.
    small = services.add_model(_greedy_model(tmp_path / "small.onnx", [1000, 1000]), "small")
    assert [m.name for m in services.list_models()] == ["small"]
    assert small.inputs[0].name == "x"


def test_the_limits_hold_in_the_child_not_in_this_process(services, tmp_path: Path) -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    services.settings.step_memory_mb = 2048
    with pytest.raises(UnsupportedModelError):
        services.add_model(_greedy_model(tmp_path / "greedy.onnx", [50_000, 50_000, 4]), "g")
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert os.getpid() > 0  # this process is alive and went on
