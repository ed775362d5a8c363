"""Models with several inputs (token ids, attention mask, token types), end to end: every
input and output is registered and shown, an NPZ with one array per input feeds them all
(evaluation, ONNX Runtime sessions, static calibration), and a dataset that cannot feed
the model is refused when the run is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from encoder_models import (
    CLASSES,
    HIDDEN,
    INPUTS,
    SEQ,
    labelled_tokens,
    token_arrays,
    write_encoder,
)
from tinymlaas.domain import Pipeline, RunStatus, Task
from tinymlaas.errors import IncompatibleChainError, InvalidInputError
from tinymlaas.evaluation.runtime import OnnxRunner, fit_to_input, input_feed
from tinymlaas.formats.datasets import read_canonical


@pytest.fixture
def encoder(tmp_path: Path) -> Path:
    return write_encoder(tmp_path / "encoder.onnx")


@pytest.fixture
def tokens(encoder: Path, tmp_path: Path) -> Path:
    """200 labelled samples; labels are the model's own predictions (accuracy 100%)."""
    return labelled_tokens(encoder, tmp_path / "tokens.npz", 200)


def _pipeline(*steps: object) -> Pipeline:
    return Pipeline.model_validate({"name": "p", "steps": list(steps)})


def test_registration_records_and_shows_every_input_and_output(cli, encoder) -> None:
    code, out, err = cli("models", "add", encoder, "--name", "encoder")
    assert code == 0, err
    for name in INPUTS:
        assert f"{name} int64 (batch, sequence)" in out
    assert f"logits float32 (batch, {CLASSES})" in out
    assert f"pooled float32 (batch, {HIDDEN})" in out
    code, out, err = cli("models", "show", "encoder", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [(t["name"], t["dtype"], t["shape"]) for t in doc["inputs"]] == [
        (n, "int64", ["batch", "sequence"]) for n in INPUTS]
    assert [t["name"] for t in doc["outputs"]] == ["logits", "pooled"]
    code, out, err = cli("models", "show", "encoder")
    assert code == 0, err
    assert "token_type_ids int64 (batch, sequence)" in " ".join(out.split())


def test_an_npz_with_one_array_per_input_feeds_quantized_runs(services, encoder,
                                                             tokens) -> None:
    model = services.add_model(encoder, "encoder")
    dataset = services.add_dataset(str(tokens), "tokens")
    assert dataset.task is Task.classification and dataset.num_samples == 200
    assert dataset.num_classes == CLASSES
    results = {}
    for steps in (["fuse", "quantize-dynamic"], [{"quantize-static": {"num_samples": 64}}]):
        run = services.create_run(_pipeline(*steps), model=model.id, dataset=dataset.id)
        done = services.execute_run(run.id)
        assert done.status is RunStatus.succeeded, done.error
        assert done.baseline["accuracy"] == 100.0  # labels are the original's predictions
        name = done.steps[-1].transformer
        quantized = onnx.load(str(services.artifacts.path(done.output_sha)))
        assert [i.name for i in quantized.graph.input] == list(INPUTS)
        ops = {n.op_type for n in quantized.graph.node}
        assert ("QuantizeLinear" in ops) if name == "quantize-static" else \
            ("DynamicQuantizeLinear" in ops or "MatMulInteger" in ops), ops
        results[name] = {**done.result, **done.steps[-1].metrics}
    assert results["quantize-static"]["calibration_samples"] == 64
    for result in results.values():
        assert result["test_samples"] == 40 and result["runtime"] == "onnxruntime"
        assert result["top1_agreement"] >= 90.0 and result["accuracy"] >= 90.0
        assert 0 < result["max_abs_diff"] < 1.0
    print({k: {m: r[m] for m in ("accuracy", "top1_agreement", "max_abs_diff", "file_bytes")}
           for k, r in results.items()})


def test_an_unlabelled_npz_reports_fidelity_only(services, encoder, tmp_path) -> None:
    path = tmp_path / "unlabelled.npz"
    np.savez(path, **token_arrays(60, seed=2))
    model = services.add_model(encoder, "encoder")
    dataset = services.add_dataset(str(path), "unlabelled")
    assert dataset.task is Task.embedding and dataset.num_classes is None
    run = services.create_run(_pipeline("quantize-dynamic"), model=model.id,
                              dataset=dataset.id)
    done = services.execute_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    assert "accuracy" not in done.result and "mse" not in done.result
    assert 0.99 < done.result["cosine_to_original"] <= 1.0 + 1e-6
    assert "accuracy" not in done.baseline and done.baseline["test_samples"] == 12


def test_integer_inputs_stay_integers_and_bad_arrays_are_refused(services, tmp_path) -> None:
    path = tmp_path / "t.npz"
    arrays = token_arrays(20)
    np.savez(path, **arrays)
    dataset = services.add_dataset(str(path), "t")
    X, _ = read_canonical(services.artifacts.path(dataset.artifact_sha))
    assert X.dtype.names == INPUTS and X["input_ids"].dtype == np.int64
    assert np.array_equal(X["input_ids"], arrays["input_ids"])
    with pytest.raises(InvalidInputError, match="has 19 samples but the others have 20"):
        np.savez(path, input_ids=arrays["input_ids"], attention_mask=arrays["attention_mask"][1:])
        services.add_dataset(str(path), "short")
    with pytest.raises(InvalidInputError, match="no labels"):
        np.savez(path, **arrays)
        services.add_dataset(str(path), "labelled", task=Task.classification)
    with pytest.raises(InvalidInputError, match="'input_ids' must be finite"):
        np.savez(path, input_ids=np.full((4, 3), np.nan), attention_mask=np.ones((4, 3)))
        services.add_dataset(str(path), "nan")
    with pytest.raises(InvalidInputError, match="X must hold numbers"):
        structured = np.zeros(4, dtype=[("a", np.float64), ("b", np.int64)])
        structured["a"] = np.nan  # a structured X is not the named-arrays form: refused
        np.savez(path, X=structured, y=np.arange(4))
        services.add_dataset(str(path), "structured")
    with pytest.raises(InvalidInputError, match="holds 40 arrays; the limit is 32"):
        np.savez(path, **{f"input{i}": np.ones((2, 1)) for i in range(40)})
        services.add_dataset(str(path), "many")
    assert [d.name for d in services.list_datasets()] == ["t"]


def test_a_dataset_that_cannot_feed_the_model_is_refused_at_submission(
        services, cli, encoder, tmp_path) -> None:
    services.add_model(encoder, "encoder")
    arrays = token_arrays(30)
    np.savez(tmp_path / "two.npz", input_ids=arrays["input_ids"],
             attention_mask=arrays["attention_mask"])
    np.savez(tmp_path / "floats.npz", **{**arrays, "input_ids": arrays["input_ids"] + 0.5})
    services.add_dataset(str(tmp_path / "two.npz"), "two")
    services.add_dataset(str(tmp_path / "floats.npz"), "floats")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: q\nsteps:\n  - quantize-static\n")
    code, out, err = cli("run", pipeline, "--model", "encoder", "--dataset", "two")
    assert code == 2
    text = " ".join((out + err).split())
    assert "model encoder and dataset two do not match" in text
    assert "no array for model input 'token_type_ids'" in text
    with pytest.raises(IncompatibleChainError, match="'input_ids' takes int64 but") as caught:
        services.create_run(_pipeline("quantize-dynamic"), model="encoder", dataset="floats")
    assert caught.value.details["input"] == "input_ids"
    services.add_dataset("digits")
    with pytest.raises(IncompatibleChainError, match=r"takes 3 inputs \(input_ids, "):
        services.create_run(_pipeline("quantize-dynamic"), model="encoder", dataset="digits")
    assert services.list_runs() == []


def test_runners_feed_every_input_and_one_array_steps_refuse_named_arrays(encoder) -> None:
    arrays = token_arrays(8)
    X = np.empty(8, dtype=[(n, np.int64, (SEQ,)) for n in INPUTS])
    for name in INPUTS:
        X[name] = arrays[name]
    runner = OnnxRunner(encoder)
    feed = runner.prepare(X[:1])
    assert sorted(feed) == sorted(INPUTS) and feed["input_ids"].dtype == np.int64
    assert runner.time_one(feed) > 0
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(runner.predict(X), session.run(["logits"], arrays)[0],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="no array for model input 'token_type_ids'"):
        input_feed(X[["input_ids", "attention_mask"]], runner.inputs)
    with pytest.raises(InvalidInputError, match=r"takes 3 inputs \(input_ids, attention_mask"):
        runner.predict(arrays["input_ids"].astype(np.float32))
    with pytest.raises(InvalidInputError, match="one array per model input"):
        fit_to_input(X, ["N", SEQ])
