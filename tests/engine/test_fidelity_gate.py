"""The fidelity gate: a run whose output misses its pipeline's threshold against the input
model ends ``degraded`` (never ``succeeded``), keeps its artifacts, and says so everywhere:
the record, the CLI (exit 8), compare, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import linear_embedding
from tinymlaas.domain import Pipeline, RunStatus, Task
from tinymlaas.errors import InvalidInputError


@pytest.fixture
def embedding(services, tmp_path: Path):
    """A linear 32 -> 16 'embedding' model and an unlabelled dataset for it."""
    return linear_embedding(services, tmp_path, 120, seed=3)


def _run(services, model, dataset, fidelity: dict | None = None):
    spec = {"name": "dyn", "steps": [{"quantize-dynamic": {}}]}
    if fidelity is not None:
        spec["fidelity"] = fidelity
    run = services.create_run(Pipeline.model_validate(spec), model=model.id,
                              dataset=dataset.id)
    return services.execute_run(run.id)


def test_an_embedding_below_the_cosine_threshold_ends_degraded(services, embedding,
                                                               tmp_path: Path) -> None:
    model, dataset = embedding
    ok = _run(services, model, dataset)
    assert ok.status is RunStatus.succeeded, ok.error
    cosine = ok.result["cosine_mean"]
    assert 0.95 < cosine < 1.0 and ok.result["cosine_min"] <= ok.result["cosine_p5"] <= cosine
    assert ok.result["task"] == "embedding" and ok.result["snr_db"] > 20
    assert "fidelity" not in ok.result

    strict = _run(services, model, dataset, {"min_cosine": 1.0})
    assert strict.status is RunStatus.degraded
    assert strict.output_sha == ok.output_sha  # the same output, kept
    assert strict.error.startswith("degraded: mean cosine to the input model's outputs is")
    assert f"{cosine:.4f}" in strict.error and "under the 1 fidelity threshold" in strict.error
    assert strict.result["fidelity"] == {"metric": "cosine_mean", "value": cosine,
                                         "threshold": 1.0, "message": strict.error[10:]}
    # the user decides: a degraded run's output can still be exported
    written = services.export_run(strict.id, tmp_path / "out")
    assert any(p.suffix == ".onnx" for p in written)
    rows = services.compare([ok.id, strict.id])
    assert [r.status for r in rows] == ["succeeded", "degraded"]
    assert rows[1].fidelity["threshold"] == 1.0 and rows[0].fidelity is None
    assert rows[0].quality["key"] == "cosine_mean"
    assert rows[0].quality["value"] == pytest.approx(cosine)


def test_fidelity_thresholds_are_validated() -> None:
    for bad in ({"min_cosine": 1.5}, {"max_accuracy_drop": -1}, {"min_cos": 0.9}):
        with pytest.raises(ValueError):
            Pipeline.model_validate({"name": "p", "steps": ["fuse"], "fidelity": bad})
    with pytest.raises(InvalidInputError):
        from tinymlaas.service.pipelines import parse_pipeline

        parse_pipeline("name: p\nsteps: [fuse]\nfidelity: {min_cosine: 2}\n")


def test_a_classifier_that_loses_accuracy_ends_degraded(services, tmp_path: Path) -> None:
    """Near-tied logits (columns differing by far less than an int8 step): the float model
    is 100 % right on its own labels, int8 weights lose the ties, far past 5 points."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(7)
    w = (np.repeat(rng.normal(size=(16, 1)), 4, axis=1)
         + 1e-3 * rng.normal(size=(16, 4))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "W")])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                   ir_version=9)
    save(onnx_model, str(tmp_path / "ties.onnx"))
    X = rng.normal(size=(400, 16)).astype(np.float32)
    np.savez(tmp_path / "ties.npz", X=X, y=(X @ w).argmax(1).astype(np.int64))
    model = services.add_model(tmp_path / "ties.onnx", "ties")
    dataset = services.add_dataset(str(tmp_path / "ties.npz"), "ties", task=Task.classification)
    run = services.create_run(Pipeline.model_validate({"name": "int8",
                                                       "steps": ["quantize-dynamic"]}),
                              model=model.id, dataset=dataset.id)
    done = services.execute_run(run.id)
    drop = done.baseline["accuracy"] - done.result["accuracy"]
    assert done.baseline["accuracy"] == pytest.approx(100.0)
    assert drop > 5.0
    assert done.status is RunStatus.degraded
    assert done.result["fidelity"]["metric"] == "accuracy_drop"
    assert done.result["fidelity"]["value"] == pytest.approx(drop)
    assert done.result["fidelity"]["threshold"] == 5.0
    assert f"accuracy fell by {drop:.2f} points" in done.error
    # a looser threshold in the pipeline lets the same output succeed
    loose = services.create_run(Pipeline.model_validate(
        {"name": "int8-loose", "steps": ["quantize-dynamic"],
         "fidelity": {"max_accuracy_drop": 100}}), model=model.id, dataset=dataset.id)
    assert services.execute_run(loose.id).status is RunStatus.succeeded


def test_cli_run_exits_8_on_a_degraded_run_and_shows_it(services, embedding, cli,
                                                        tmp_path: Path) -> None:
    spec = {"name": "strict", "model": "embed", "dataset": "sentences",
            "steps": ["quantize-dynamic"], "fidelity": {"min_cosine": 1.0}}
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, err = cli("run", path)
    assert code == 8, out + err
    assert "degraded" in out and "fidelity threshold" in out
    code, out, _ = cli("runs", "list", "--json")
    assert json.loads(out)[0]["status"] == "degraded"
    code, out, _ = cli("compare", "strict")
    assert code == 0 and "degraded" in out and "mean cosine 0.99" in out


def test_static_int8_that_destroys_an_embedding_ends_degraded(services, tmp_path: Path) -> None:
    """An activation outlier (one input feature a thousand times larger, with tiny weights,
    as in transformers' hidden states): per-tensor int8 activations round every other
    feature to zero, and the embedding is destroyed. The default gate catches it."""
    rng = np.random.default_rng(11)
    w = rng.normal(size=(32, 16)).astype(np.float32)
    w[0] *= 1e-4
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(w, "W")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
         str(tmp_path / "outlier.onnx"))
    X = rng.normal(size=(300, 32)).astype(np.float32)
    X[:, 0] = rng.choice([-1000.0, 1000.0], size=len(X))
    np.savez(tmp_path / "outlier.npz", X=X, y=np.zeros(len(X), np.float32))
    model = services.add_model(tmp_path / "outlier.onnx", "outlier")
    dataset = services.add_dataset(str(tmp_path / "outlier.npz"), "outlier",
                                   task=Task.embedding)
    run = services.create_run(Pipeline.model_validate(
        {"name": "static", "steps": [{"quantize-static": {"per_channel": False}}]}),
        model=model.id, dataset=dataset.id)
    done = services.execute_run(run.id)
    assert done.status is RunStatus.degraded, done.error
    cosine = done.result["cosine_mean"]
    assert cosine < 0.95 and done.result["cosine_min"] <= cosine
    assert done.result["fidelity"] == {"metric": "cosine_mean", "value": cosine,
                                       "threshold": 0.95, "message": done.error[10:]}
    assert done.result["snr_db"] < 10.0  # the error is as large as the signal


def test_the_email_of_a_degraded_run_gives_the_figure() -> None:
    from tinymlaas.domain import Run
    from tinymlaas.notify.notifier import Notifier, run_event_name

    run = Run(id="run-2", name="q", model_id="m", pipeline=Pipeline(name="q", steps=["fuse"]),
              status=RunStatus.degraded,
              error="degraded: mean cosine to the input model's outputs is 0.3400 (min "
                    "0.0500), under the 0.95 fidelity threshold",
              baseline={"file_bytes": 4096}, result={"cosine_mean": 0.34, "snr_db": 2.5,
                                                     "file_bytes": 1024})
    subject, body = Notifier._email(run)
    assert subject == "[tinymlaas] run q degraded" and run_event_name(run) == "run.degraded"
    lines = body.splitlines()
    assert "Error: degraded: mean cosine to the input model's outputs is 0.3400 (min 0.0500), " \
           "under the 0.95 fidelity threshold" in lines
    assert "  mean cosine to the input model: - -> 0.3400" in lines
    assert "  output SNR: - -> 2.5 dB" in lines
