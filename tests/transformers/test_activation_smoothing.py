"""Activation smoothing before dynamic int8: the smoothed float graph computes the same
function, and ``auto-int8`` keeps the smoothing strength whose int8 outputs are closest to
the float model's, which on a model whose LayerNorms have outlier channels (as trained BERTs
do) is much closer than dynamic int8 without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from hf_models import bert_inputs, write_bert_embedder, write_canonical_tokens
from tinymlaas.domain import ArtifactKind, DatasetSplits, Task
from tinymlaas.errors import InvalidInputError
from tinymlaas.evaluation.evaluate import cosines
from tinymlaas.evaluation.static import graph_stats
from tinymlaas.transformers.base import DatasetAccess, StepContext
from tinymlaas.transformers.onnx.smooth import activation_maxima, smooth, smoothable_groups
from tinymlaas.transformers.registry import get_transformer, validate_params

#: Channels of each MatMul's input made wide, and by how much.
OUTLIERS, GAIN = [3, 17], 50.0


def _with_outlier_channels(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same function with two channels of every MatMul's input 50x wider and the
    weight rows that read them 50x narrower: the pattern of a trained transformer's
    activations (a few channels far wider than the rest), which a random one lacks."""
    weights = {i.name: i for i in model.graph.initializer}
    inserts = []
    for activation, indices in smoothable_groups(model).items():
        gain = np.ones(weights[model.graph.node[indices[0]].input[1]].dims[0], np.float32)
        gain[OUTLIERS] = GAIN
        model.graph.initializer.append(numpy_helper.from_array(gain, f"{activation}_gain"))
        inserts.append((indices[0], onnx.helper.make_node(
            "Mul", [activation, f"{activation}_gain"], [f"{activation}_wide"])))
        for index in indices:
            node = model.graph.node[index]
            node.input[0] = f"{activation}_wide"
            weight = numpy_helper.to_array(weights[node.input[1]]) / gain[:, None]
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
    for index, node in sorted(inserts, key=lambda item: item[0], reverse=True):
        model.graph.node.insert(index, node)
    return model


@pytest.fixture(scope="module")
def outlier_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetAccess]:
    root = tmp_path_factory.mktemp("outliers")
    plain = write_bert_embedder(root / "plain.onnx")
    onnx.save(_with_outlier_channels(onnx.load(str(plain))), str(root / "bert.onnx"))
    feed = bert_inputs(8, 32, seed=5)
    np.testing.assert_allclose(*(ort.InferenceSession(str(p)).run(None, feed)[0]
                                 for p in (root / "bert.onnx", plain)), rtol=1e-3, atol=1e-3)
    data = write_canonical_tokens(root / "tokens.npz", bert_inputs(128, 32, seed=3))
    return root / "bert.onnx", DatasetAccess(path=data, task=Task.embedding,
                                             splits=DatasetSplits())


def _auto_int8(model: Path, dataset: DatasetAccess, out: Path, **params):
    out.mkdir()
    ctx = StepContext(input_path=model, input_kind=ArtifactKind.onnx,
                      params=validate_params("auto-int8", params), out_dir=out, work_dir=out,
                      dataset=dataset)
    return get_transformer("auto-int8").run(ctx)


def _unseen_cosine(model: Path, quantized: Path) -> np.ndarray:
    feed = bert_inputs(64, 48, seed=11)
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    return cosines(ort.InferenceSession(str(quantized)).run(None, feed)[0], ref)


def test_the_smoothed_float_graph_computes_the_same_function(outlier_bert) -> None:
    path, _ = outlier_bert
    model = onnx.load(str(path))
    groups = smoothable_groups(model)
    # per layer: Q, K and V read one LayerNorm output; the attention output, the FFN's
    # first and second dense layers one activation each
    assert sorted(len(g) for g in groups.values()) == [1] * 6 + [3] * 2
    feed = bert_inputs(16, 32, seed=5)
    maxima = activation_maxima(model, [feed], list(groups))
    assert {int(np.argmax(maxima[a])) for a in groups if len(groups[a]) == 3} <= set(OUTLIERS)
    smoothed = smooth(model, maxima, 0.8)
    assert sum(n.op_type == "Mul" for n in smoothed.graph.node) == \
        sum(n.op_type == "Mul" for n in model.graph.node) + len(groups)
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(smoothed.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the factors are a change of variables: the logical parameter count stays
    assert graph_stats(smoothed).parameters == graph_stats(model).parameters


def test_auto_int8_keeps_the_smoothing_closest_to_float(outlier_bert, tmp_path) -> None:
    model, dataset = outlier_bert
    plain = _auto_int8(model, dataset, tmp_path / "plain", smooth_alphas=[])
    assert "smooth_alpha" not in plain.metrics
    auto = _auto_int8(model, dataset, tmp_path / "auto")
    scores = auto.metrics["calibration_cosine"]
    assert set(scores) == {"0", "0.6", "0.8"}
    chosen = auto.metrics["smooth_alpha"]
    assert chosen in (0.6, 0.8) and scores[f"{chosen:g}"] == max(scores.values())
    assert auto.metrics["smoothed_groups"] == 8
    before, after = _unseen_cosine(model, plain.path), _unseen_cosine(model, auto.path)
    assert after.mean() >= 0.99 and after.min() >= 0.95, (after.mean(), after.min())
    assert 1.0 - after.mean() < (1.0 - before.mean()) / 2, (before.mean(), after.mean())
    assert graph_stats(onnx.load(str(auto.path))).parameters == \
        graph_stats(onnx.load(str(model))).parameters
    assert auto.path.parent == tmp_path / "auto" and auto.path.is_file()


def test_smoothing_strengths_are_checked() -> None:
    for bad in ([0.0], [1.5], [-0.2], [0.5] * 9):
        with pytest.raises(InvalidInputError, match="smooth_alphas"):
            validate_params("auto-int8", {"smooth_alphas": bad})
