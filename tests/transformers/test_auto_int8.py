"""``auto-int8`` picks the int8 recipe by graph: dynamic per-channel for a BERT-like encoder
(built from a ``transformers`` config, random weights), static QDQ for a conv net, and the
``auto-int8`` template runs on an ONNX model as registered."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hf_models import bert_inputs, write_bert_embedder, write_canonical_tokens
from tinymlaas.domain import ArtifactKind, DatasetSplits, RunStatus, Task
from tinymlaas.transformers.base import DatasetAccess, StepContext
from tinymlaas.transformers.registry import get_transformer, validate_params


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetAccess]:
    root = tmp_path_factory.mktemp("bert")
    model = write_bert_embedder(root / "bert.onnx")
    data = write_canonical_tokens(root / "tokens.npz", bert_inputs(128, 32, seed=3))
    return model, DatasetAccess(path=data, task=Task.embedding, splits=DatasetSplits())


def _run(name: str, model: Path, dataset: DatasetAccess, out: Path, **params):
    out.mkdir()
    ctx = StepContext(input_path=model, input_kind=ArtifactKind.onnx,
                      params=validate_params(name, params), out_dir=out, work_dir=out,
                      dataset=dataset)
    return get_transformer(name).run(ctx)


def _cosine(model: Path, quantized: Path) -> np.ndarray:
    """Per-sample cosine of the quantized embeddings to fp32's, on inputs calibration never
    saw (another seed, a longer sequence)."""
    feed = bert_inputs(64, 48, seed=11)
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    out = ort.InferenceSession(str(quantized)).run(None, feed)[0]
    return (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))


def test_transformer_gets_dynamic_per_channel_int8_close_to_fp32(bert, tmp_path) -> None:
    model, dataset = bert
    result = _run("auto-int8", model, dataset, tmp_path / "auto")
    assert result.metrics["strategy"] == "dynamic"
    counts = result.metrics["op_counts"]
    assert counts["weight_matmuls"] == 12 and counts["activation_matmuls"] == 4
    assert counts["layernorms"] == 5 and counts["softmaxes"] == 2 and counts["conv"] == 0
    assert "transformer-like" in result.metrics["reason"]
    cosine = _cosine(model, result.path)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95, (cosine.mean(), cosine.min())
    # 3.9x on a MiniLM-sized model; this one is so small that per-channel scales and
    # float LayerNorms weigh more
    assert os.path.getsize(model) / os.path.getsize(result.path) >= 3.3
    graph = onnx.load(str(result.path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") == 12 and ops.count("Softmax") == 2
    assert ops.count("LayerNormalization") == 5  # kept in float


def test_quantize_dynamic_defaults_to_per_channel_weights(bert, tmp_path) -> None:
    model, dataset = bert
    on = _run("quantize-dynamic", model, dataset, tmp_path / "on")
    off = _run("quantize-dynamic", model, dataset, tmp_path / "off", per_channel=False)

    def weight_scales(path: Path) -> list[int]:
        graph = onnx.load(str(path)).graph
        return [int(np.prod(i.dims)) for i in graph.initializer
                if i.name.endswith("_scale") and "MatMul" in i.name]

    assert weight_scales(on.path) and min(weight_scales(on.path)) == 128
    assert set(weight_scales(off.path)) == {1}
    assert _cosine(model, on.path).mean() >= 0.99
    assert _cosine(model, on.path).mean() >= _cosine(model, off.path).mean() - 1e-3


def test_static_on_a_transformer_keeps_sensitive_nodes_in_float(bert, tmp_path) -> None:
    model, dataset = bert
    result = _run("auto-int8", model, dataset, tmp_path / "static", strategy="static",
                  num_samples=64)
    assert result.metrics["strategy"] == "static"
    assert result.metrics["kept_float"] == 2 + 5 + 4  # Softmax, LayerNorm, attention MatMuls
    graph = onnx.load(str(result.path)).graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 2
    for node in softmaxes:  # the attention probabilities reach the context MatMul in float
        assert consumers[node.output[0]] == ["MatMul"], node.name
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    cosine = _cosine(model, result.path)
    assert cosine.mean() >= 0.98 and cosine.min() >= 0.95


def test_conv_net_gets_static_qdq(run_transformer, digits_onnx) -> None:
    result = run_transformer("auto-int8", digits_onnx, num_samples=64)
    assert result.metrics["strategy"] == "static"
    assert result.metrics["op_counts"]["conv"] >= 2
    assert result.metrics["kept_float"] == 0
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_the_template_runs_on_a_registered_onnx_model(services, tmp_path) -> None:
    from encoder_models import labelled_tokens, write_encoder
    from tinymlaas.service.pipelines import load_pipeline
    from tinymlaas.templates import template_path

    encoder = write_encoder(tmp_path / "encoder.onnx")
    model = services.add_model(encoder, "encoder")
    dataset = services.add_dataset(str(labelled_tokens(encoder, tmp_path / "tokens.npz", 200)),
                                   "tokens")
    run = services.create_run(load_pipeline(template_path("auto-int8")), model=model.id,
                              dataset=dataset.id)
    done = services.execute_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    step = done.steps[-1]
    assert step.transformer == "auto-int8" and step.metrics["strategy"] in {"static", "dynamic"}
    assert done.result["accuracy"] >= done.baseline["accuracy"] - 5.0
    assert done.result["parameters"] == done.baseline["parameters"]


def test_vit_with_a_patch_conv_is_still_a_transformer(tmp_path) -> None:
    from hf_models import vit_images, write_vit_classifier

    model = write_vit_classifier(tmp_path / "vit.onnx")
    data = tmp_path / "images.npz"
    np.savez(data, X=vit_images(32, seed=3), y=np.zeros(32, np.int64))
    access = DatasetAccess(path=data, task=Task.classification, splits=DatasetSplits(),
                           num_classes=10)
    result = _run("auto-int8", model, access, tmp_path / "auto")
    assert result.metrics["strategy"] == "dynamic"
    assert result.metrics["op_counts"]["conv"] == 1  # the patch embedding
    feed = {"pixel_values": vit_images(64, seed=11)}
    ref = ort.InferenceSession(str(model)).run(None, feed)[0]
    out = ort.InferenceSession(str(result.path)).run(None, feed)[0]
    cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95, (cosine.mean(), cosine.min())
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.85
