"""A Hugging Face model for a new user: its ONNX export carries no exporter notes (size
ratios against it are the weights'), a text dataset cannot be tokenized longer than its
position embeddings (the run would fail in evaluation on ONNX Runtime's broadcast error),
and a template that exports a PyTorch model, run on an ONNX one, says what to do instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import linear_onnx
from hf_folders import write_bert_folder
from tinymlaas.errors import IncompatibleChainError, InvalidInputError
from tinymlaas.formats.datasets import read_canonical
from tinymlaas.formats.text_datasets import TextOptions
from tinymlaas.service.pipelines import load_pipeline
from tinymlaas.templates import template_path


def test_max_length_is_bounded_by_the_models_positions(services, tmp_path: Path) -> None:
    model = services.add_hf_model(str(write_bert_folder(tmp_path / "bert")), "bert")
    graph = onnx.load(str(services.artifact_path(model.artifact_sha))).graph
    assert not any(node.metadata_props for node in graph.node)  # no exporter stack traces
    data = tmp_path / "sentences.csv"
    data.write_text("text\nthe cat sat on the mat\na good movie\nnot great\n")
    with pytest.raises(InvalidInputError) as refused:
        services.add_dataset(str(data), "long", text=TextOptions("bert"))  # 128 by default
    assert refused.value.message == (
        "max_length 128 is more tokens than the model takes (64, its position embeddings); "
        "use a max_length of at most 64")
    assert services.list_datasets() == []

    dataset = services.add_dataset(str(data), "sentences",
                                   text=TextOptions("bert", max_length=64))
    X, _ = read_canonical(services.artifact_path(dataset.artifact_sha))
    assert X["input_ids"].shape == (3, 64) and X["input_ids"].dtype.base == np.int64
    run = services.execute_run(services.create_run(
        load_pipeline(template_path("auto-int8")), model=model.id, dataset=dataset.id).id)
    assert run.status == "succeeded", run.error
    assert run.result["cosine_mean"] > 0.99
    # int8 weights: about 3.5x fewer weight bytes, and the file shrinks by no more than its
    # weights can (the float file holds weights, graph and the kept tokenizer, nothing else)
    weights = run.baseline["weight_bytes"] / run.result["weight_bytes"]
    assert 3.0 < weights < 4.0
    assert 1.5 < run.baseline["file_bytes"] / run.result["file_bytes"] < weights


def test_an_export_template_on_an_onnx_model_names_the_way_out(services,
                                                               tmp_path: Path) -> None:
    model = services.add_model(linear_onnx(tmp_path / "logreg.onnx"), "logreg")
    data = services.add_dataset("digits")
    with pytest.raises(IncompatibleChainError) as refused:
        services.create_run(load_pipeline(template_path("static-int8")), model=model.id,
                            dataset=data.id)
    assert refused.value.message == (
        "step 1 (export-onnx) takes torch-exported, torchscript but receives onnx (the model "
        "is ONNX already: leave export-onnx out, or run the auto-int8 template)")
    assert services.list_runs() == []
