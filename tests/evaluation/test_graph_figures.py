"""Figures of a BERT-like encoder (random weights from a ``transformers`` config): MACs match
the hand formula at the dataset's sequence length (or the documented default), and the
parameter count is the same for fp32 and its int8 versions."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnxruntime.quantization import quantize_dynamic

from hf_models import (
    bert_inputs,
    bert_macs,
    bert_parameter_count,
    structured,
    write_bert_embedder,
    write_canonical_tokens,
)
from tinymlaas.domain import ArtifactKind, DatasetSplits, Task
from tinymlaas.evaluation.static import DEFAULT_SEQUENCE, graph_stats, sample_shapes
from tinymlaas.transformers.base import DatasetAccess, StepContext
from tinymlaas.transformers.registry import get_transformer, validate_params

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert_embedder(tmp_path_factory.mktemp("bert") / "bert.onnx")


def test_macs_follow_the_sequence_length(bert: Path) -> None:
    model = onnx.load(str(bert))
    default = graph_stats(model).macs
    assert abs(default - bert_macs(DEFAULT_SEQUENCE)) <= 0.02 * bert_macs(DEFAULT_SEQUENCE)
    X = structured(bert_inputs(4, 32))
    shapes = sample_shapes(X, INPUTS)
    assert shapes == {name: [1, 32] for name in INPUTS}
    at_32 = graph_stats(model, input_shapes=shapes).macs
    assert abs(at_32 - bert_macs(32)) <= 0.02 * bert_macs(32)
    # the attention products grow with the square of the sequence, the rest linearly
    assert at_32 < default / 4


def test_parameters_are_the_same_before_and_after_int8(bert: Path, tmp_path: Path) -> None:
    fp32 = graph_stats(onnx.load(str(bert))).parameters
    assert fp32 == bert_parameter_count()
    counts = {}
    for per_channel in (True, False):
        out = tmp_path / f"ort-dynamic-{per_channel}.onnx"
        quantize_dynamic(str(bert), str(out), per_channel=per_channel)
        counts[f"ort-dynamic-{per_channel}"] = graph_stats(onnx.load(str(out))).parameters
    data = write_canonical_tokens(tmp_path / "tokens.npz", bert_inputs(64, 32, seed=3))
    access = DatasetAccess(path=data, task=Task.embedding, splits=DatasetSplits())
    for strategy in ("static", "dynamic"):
        out_dir = tmp_path / strategy
        out_dir.mkdir()
        ctx = StepContext(input_path=bert, input_kind=ArtifactKind.onnx,
                          params=validate_params("auto-int8", {"strategy": strategy,
                                                               "num_samples": 32}),
                          out_dir=out_dir, work_dir=out_dir, dataset=access)
        result = get_transformer("auto-int8").run(ctx)
        stats = graph_stats(onnx.load(str(result.path)))
        counts[strategy] = stats.parameters
        assert stats.macs == graph_stats(onnx.load(str(bert))).macs, strategy
    assert counts == dict.fromkeys(counts, fp32)
