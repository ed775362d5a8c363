"""Locally the CLI is its own server: a step that fails unexpectedly prints its one-line
error and reference, and its traceback goes to <home>/logs/steps.log, not the terminal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _gather(path: Path) -> Path:
    """An embedding table of 10 rows looked up by int64 ids."""
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])],
        initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_unexpected_step_failure_logs_its_traceback_to_a_file(cli, settings,
                                                                 tmp_path: Path) -> None:
    assert cli("models", "add", _gather(tmp_path / "lookup.onnx"), "--task",
               "embedding")[0] == 0
    ids = np.random.default_rng(0).integers(10, 50, (40, 3))  # all past the table's 10 rows
    np.savez(tmp_path / "ids.npz", X=ids, y=np.zeros(len(ids), np.float32))
    assert cli("datasets", "add", tmp_path / "ids.npz", "--task", "embedding")[0] == 0
    (tmp_path / "fuse.yaml").write_text("name: fused\nsteps:\n  - fuse\n")
    code, out, err = cli("run", tmp_path / "fuse.yaml", "--model", "lookup", "--dataset",
                         "ids")
    assert code == 6
    assert "Traceback" not in out + err
    assert "indices element out of data bounds" in out
    reference = re.search(r"\(reference ([0-9a-f]+);", out).group(1)
    log = (settings.home / "logs" / "steps.log").read_text()
    assert f"failed unexpectedly (reference {reference}):\nTraceback" in log
