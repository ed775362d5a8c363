"""``optimize`` on an ONNX graph that cannot be converted to PyTorch (a multi-input,
BERT-shaped encoder): ONNX-native choices only, each tried once, exactly ``max_trials``
candidates, selection on the validation half and figures from the held-out half."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encoder_models import labelled_tokens, token_arrays, write_encoder
from hf_models import bert_inputs, write_bert_embedder
from tinymlaas.domain import DatasetSplits, Task
from tinymlaas.domain.searches import Candidate
from tinymlaas.formats.datasets import split_indices
from tinymlaas.optimize import optimize
from tinymlaas.optimize.search import _pick
from tinymlaas.optimize.sensitivity import layer_sensitivity
from tinymlaas.optimize.space import TORCH_TECHNIQUES
from tinymlaas.transformers.base import DatasetAccess

TORCH_STEPS = {"prune-structured", "distill", "factorize-lowrank", "qat", "export-onnx"}


@pytest.fixture
def encoder_and_tokens(services, tmp_path: Path):
    encoder = write_encoder(tmp_path / "encoder.onnx")
    model = services.add_model(encoder, "encoder")
    dataset = services.add_dataset(str(labelled_tokens(encoder, tmp_path / "tokens.npz", 120)),
                                   "tokens")
    return model, dataset


def _signature(services, run_id: str) -> str:
    run = services.get_run(run_id)
    return repr([(s.transformer, sorted(s.params.items())) for s in run.pipeline.steps])


def test_an_unconvertible_graph_is_searched_with_onnx_choices_only(services,
                                                                   encoder_and_tokens):
    model, dataset = encoder_and_tokens
    result = optimize(services, model.name, dataset.name, max_accuracy_drop=5.0,
                      budget="10m", max_trials=4, epochs=1)
    assert len(result.candidates) == 4  # exactly --max-trials
    assert result.skipped and "cannot be converted to PyTorch" in result.skipped[0]
    assert "Gather" in result.skipped[0]
    assert "skipped: pruning, distillation" in result.message
    for c in result.candidates:
        assert not TORCH_STEPS & set(c.steps), c.steps
        assert c.choice["technique"] not in TORCH_TECHNIQUES
    # the seeds come first: the graph-aware default, then dynamic per-channel int8
    assert result.candidates[0].steps == ["auto-int8"]
    assert result.candidates[1].steps == ["quantize-dynamic"]
    signatures = [_signature(services, c.run_id) for c in result.candidates]
    assert len(set(signatures)) == len(signatures)
    assert result.recommended is not None, result.message
    chosen = next(c for c in result.candidates if c.run_id == result.recommended)
    run = services.get_run(chosen.run_id)
    assert run.pipeline.evaluation_split == "validation"
    # the figures of the recommended pipeline come from the held-out half, by another run
    test = chosen.test
    assert test is not None and test["run_id"] != chosen.run_id
    held = services.get_run(test["run_id"])
    assert held.pipeline.evaluation_split == "holdout"
    assert held.output_sha == run.output_sha  # the same model, its steps cache hits
    halves = split_indices(dataset.num_samples, dataset.splits)
    assert run.result["test_samples"] == len(halves["validation"])
    assert test["samples"] == len(halves["holdout"])
    assert held.result["outputs_sha"] != run.result["outputs_sha"]
    assert test["size_ratio"] == pytest.approx(
        held.baseline["file_bytes"] / held.result["file_bytes"])
    assert test["size_ratio"] > 1.0
    assert "held-out test half" in result.message


def test_no_choice_runs_twice_and_an_exhausted_space_ends_the_search(services,
                                                                    encoder_and_tokens):
    model, dataset = encoder_and_tokens
    result = optimize(services, model.name, dataset.name, max_accuracy_drop=5.0,
                      budget="10m", max_trials=40, epochs=1, sensitivity=False)
    # auto, dynamic x per_channel x reduce_range, static x per_channel (keep_float adds a
    # pipeline only where the probes find a layer to keep), fp16, fp32: at most 11
    assert 7 <= len(result.candidates) <= 11
    signatures = [_signature(services, c.run_id) for c in result.candidates if c.run_id]
    assert len(set(signatures)) == len(result.candidates)
    failed = [c for c in result.candidates if c.status != "succeeded"]
    assert all(c.error for c in failed)
    assert result.recommended is not None or "no candidate" in result.message


def test_the_cli_ends_with_a_result_on_such_a_graph(cli, services, encoder_and_tokens):
    model, dataset = encoder_and_tokens
    code, out, err = cli("optimize", "--model", model.name, "--dataset", dataset.name,
                         "--max-accuracy-drop", "5", "--budget", "5m", "--max-trials", "2",
                         "--json")
    assert code == 0, err
    assert "Traceback" not in out + err
    data = json.loads(out)
    assert len(data["candidates"]) == 2
    assert data["recommended"] in {c["run_id"] for c in data["candidates"]}
    assert "cannot be converted to PyTorch" in data["message"]


def test_validation_and_holdout_halve_the_test_split() -> None:
    splits = DatasetSplits(test_fraction=0.2, seed=3)
    parts = split_indices(101, splits)
    validation, holdout = set(parts["validation"]), set(parts["holdout"])
    assert not validation & holdout
    assert validation | holdout == set(parts["test"])
    assert abs(len(validation) - len(holdout)) <= 1
    assert np.array_equal(split_indices(101, splits)["holdout"], parts["holdout"])
    tiny = split_indices(4, splits)  # one test sample: both halves are that sample
    assert len(tiny["test"]) == 1
    assert np.array_equal(tiny["validation"], tiny["holdout"])


def _c(i: int, drop: float, size: int) -> Candidate:
    return Candidate(trial=i, run_id=f"r{i}", name=f"c{i}", steps=[], choice={},
                     status="succeeded", accuracy=-drop, accuracy_drop=drop, objective=size,
                     feasible=True)


def test_within_three_percent_the_smaller_drop_wins() -> None:
    assert _pick([_c(0, 0.9, 1000), _c(1, 0.1, 1025)]).run_id == "r1"
    assert _pick([_c(0, 0.9, 1000), _c(1, 0.1, 1040)]).run_id == "r0"
    assert _pick([]) is None



def test_a_hugging_face_bert_export_gets_a_cosine_judged_search(services, tmp_path: Path):
    """The real case: ``torch.onnx`` export of a (tiny, random) BERT, with Shape, Gather
    and Erf nodes, judged on the mean cosine to its own embeddings."""
    bert = write_bert_embedder(tmp_path / "bert.onnx", layers=1, hidden=32, heads=2,
                               vocab=100)
    np.savez(tmp_path / "sentences.npz", **bert_inputs(80, seq=16, vocab=100, seed=4))
    model = services.add_model(bert, "bert")
    dataset = services.add_dataset(str(tmp_path / "sentences.npz"), "sentences",
                                   task=Task.embedding)
    result = optimize(services, model.name, dataset.name, quality_budget="cosine=0.02",
                      budget="10m", max_trials=3, epochs=1)
    assert len(result.candidates) == 3
    assert result.quality_metric == "cosine_mean"
    assert "cannot be converted to PyTorch" in result.skipped[0]
    assert all(not TORCH_STEPS & set(c.steps) for c in result.candidates)
    assert [c.steps for c in result.candidates[:2]] == [["auto-int8"], ["quantize-dynamic"]]
    if result.recommended is None:
        assert result.message.startswith("no candidate meets every constraint")
    else:
        chosen = next(c for c in result.candidates if c.run_id == result.recommended)
        assert chosen.accuracy_drop <= 0.02 and chosen.test is not None
        assert chosen.test["quality"] == pytest.approx(
            services.get_run(chosen.test["run_id"]).result["cosine_mean"])
        assert chosen.test["size_ratio"] > 1.5


def test_sensitivity_of_an_embedding_is_a_cosine_and_stops_at_its_deadline(
        services, tmp_path: Path) -> None:
    encoder = write_encoder(tmp_path / "encoder.onnx")
    np.savez(tmp_path / "tokens.npz", **token_arrays(80, seed=3))
    model = services.add_model(encoder, "encoder")
    dataset = services.add_dataset(str(tmp_path / "tokens.npz"), "tokens",
                                   task=Task.embedding)
    access = DatasetAccess(path=services.artifact_path(dataset.artifact_sha),
                           task=dataset.task, splits=dataset.splits)
    path = services.artifact_path(model.artifact_sha)
    (probe,) = layer_sensitivity(path, model.kind, model.inputs, access, 0.01,
                                 split="validation", prune=False)
    assert probe.probe == "quantize-int8" and 0.9 < probe.value <= 1.0 + 1e-9
    assert probe.metric == "cosine_mean" and probe.drop == pytest.approx(1.0 - probe.value)
    assert layer_sensitivity(path, model.kind, model.inputs, access, 0.01,
                             split="validation", prune=False, deadline=0.0) == []
