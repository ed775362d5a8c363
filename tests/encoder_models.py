"""A BERT-shaped multi-input ONNX model and token arrays for it, built in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, HIDDEN, CLASSES, SEQ = 40, 16, 3, 12
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def write_encoder(path: Path) -> Path:
    """A BERT-shaped toy: word + token-type embeddings, masked mean pooling, a classifier;
    outputs the logits and the pooled vector."""
    rng = np.random.default_rng(0)
    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in INPUTS]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", HIDDEN])]
    weights = {
        "word": rng.normal(size=(VOCAB, HIDDEN)), "types": rng.normal(size=(2, HIDDEN)),
        "W": rng.normal(size=(HIDDEN, CLASSES)), "b": rng.normal(size=CLASSES) * 0.1}
    init = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    init += [numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([1], np.int64), "seq_axis")]
    nodes = [
        helper.make_node("Gather", ["word", "input_ids"], ["we"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["te"]),
        helper.make_node("Add", ["we", "te"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "seq_axis"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "encoder", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def token_arrays(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, size=(n, SEQ)) * mask
    types = (np.arange(SEQ)[None, :] >= (lengths // 2)[:, None]).astype(np.int64) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def labelled_tokens(encoder: Path, path: Path, n: int) -> Path:
    """An NPZ of ``n`` samples of :func:`token_arrays` (one array per input) labelled with
    ``encoder``'s own predictions, so its accuracy on them is 100 %."""
    from tinymlaas.evaluation.runtime import OnnxRunner

    arrays = token_arrays(n)
    X = np.empty(n, dtype=[(name, np.int64, (SEQ,)) for name in INPUTS])
    for name in INPUTS:
        X[name] = arrays[name]
    np.savez(path, y=OnnxRunner(encoder).predict(X).argmax(1), **arrays)
    return path
