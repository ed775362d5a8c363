"""A model exported with a fixed batch (a torch.export archive keeps the one it was
exported with) is evaluated in batches of that size, the last one padded; and the ONNX
export of a PyTorch model carries no exporter notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tinymlaas.domain import Task
from tinymlaas.evaluation.runtime import OnnxRunner
from tinymlaas.service.pipelines import load_pipeline
from tinymlaas.templates import template_path


def test_a_fixed_batch_of_three_predicts_seven_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    X = rng.normal(size=(7, 5)).astype(np.float32)
    runner = OnnxRunner(tmp_path / "fixed.onnx")
    assert runner.predict(X) == pytest.approx(X @ w, abs=1e-5)
    assert runner.prepare(X[:1])["x"].shape == (3, 5)  # the latency sample, padded


def test_a_pt2_with_a_fixed_batch_runs_the_default_int8(services, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                 torch.nn.Linear(256, 64)).eval()
    program = torch.export.export(module, (torch.zeros(4, 64),))  # batch 4, not dynamic
    torch.export.save(program, str(tmp_path / "mlp.pt2"))
    model = services.add_model(tmp_path / "mlp.pt2", "mlp", task=Task.embedding)
    assert model.inputs[0].shape == [4, 64]
    X = np.random.default_rng(1).normal(size=(50, 64)).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", X=X, y=np.zeros(len(X), np.float32))
    data = services.add_dataset(str(tmp_path / "vectors.npz"), "vectors",
                                task=Task.embedding)
    run = services.execute_run(services.create_run(
        load_pipeline(template_path("export-auto-int8")), model=model.id,
        dataset=data.id).id)
    assert run.status == "succeeded", run.error
    assert run.result["cosine_mean"] > 0.99 and run.result["cosine_min"] > 0.95
    export = services.artifact_path(run.steps[0].output_sha)
    graph = onnx.load(str(export)).graph
    assert graph.node and not any(node.metadata_props for node in graph.node)
    weights = run.baseline["weight_bytes"] / run.result["weight_bytes"]
    assert 3.0 < weights < 4.0
    assert run.baseline["file_bytes"] / run.result["file_bytes"] < weights
