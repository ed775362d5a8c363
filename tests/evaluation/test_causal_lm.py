"""A tiny random GPT-2 causal LM exported to ONNX the usual way (``input_ids`` and
``attention_mask``, batch and sequence dynamic, ``logits`` out) registers, the check at
registration feeding ids within its vocabulary; dynamic int8 on it is measured against
the fp32 model on an NPZ of random ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from hf_models import CAUSAL_LM_INPUTS, causal_lm_inputs, write_causal_lm
from tinymlaas.domain import Pipeline, RunStatus, Task
from tinymlaas.errors import UnsupportedModelError
from tinymlaas.formats.examples import onnx_vocab_sizes

VOCAB = 256  # over the 0..99 fallback: the registration check must find it


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory) -> Path:
    return write_causal_lm(tmp_path_factory.mktemp("lm") / "lm.onnx", vocab=VOCAB)


def test_a_causal_lm_registers_and_quantizes_with_fidelity_figures(services, causal_lm,
                                                                  tmp_path: Path) -> None:
    assert onnx_vocab_sizes(onnx.load(str(causal_lm))) == {"input_ids": VOCAB}
    model = services.add_model(causal_lm, "tiny-gpt2", task=Task.embedding)
    assert [(s.name, s.dtype, s.shape) for s in model.inputs] == [
        (n, "int64", ["batch", "sequence"]) for n in CAUSAL_LM_INPUTS]
    assert [(s.name, s.shape) for s in model.outputs] == [
        ("logits", ["batch", "sequence", VOCAB])]
    data = tmp_path / "ids.npz"
    np.savez(data, **causal_lm_inputs(60, seq=16, vocab=VOCAB, seed=3))
    dataset = services.add_dataset(str(data), "ids")
    assert dataset.task is Task.embedding and dataset.num_classes is None
    run = services.create_run(Pipeline.model_validate({"name": "q",
                                                       "steps": ["quantize-dynamic"]}),
                              model=model.id, dataset=dataset.id)
    done = services.execute_run(run.id)
    assert done.status in {RunStatus.succeeded, RunStatus.degraded}, done.error
    result = done.result
    print({k: result[k] for k in ("cosine_mean", "cosine_min", "snr_db", "max_abs_error",
                                  "file_bytes")}, done.status)
    assert 0.99 < result["cosine_min"] <= result["cosine_mean"] <= 1.0 + 1e-6
    assert result["snr_db"] > 20.0 and 0.0 < result["max_abs_error"] < 1.0
    assert result["file_bytes"] < 0.6 * done.baseline["file_bytes"]


def test_a_model_onnx_runtime_cannot_run_is_refused_at_registration(services,
                                                                   tmp_path: Path) -> None:
    """Ids shifted past the end of a Gather's table: ONNX Runtime fails on the example
    inputs, and the model is refused with the inputs it was given, not stored."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.zeros((50, 4), np.float32), "table")
    offset = numpy_helper.from_array(np.array(60, np.int64), "offset")
    graph = helper.make_graph(
        [helper.make_node("Add", ["ids", "offset"], ["shifted"]),
         helper.make_node("Gather", ["table", "shifted"], ["out"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 4])],
        [table, offset])
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedModelError, match=r"ONNX Runtime cannot run broken\.onnx on "
                                                    r"example inputs \(ids int64\[1, 3\]\)"):
        services.add_model(path, "broken")
    assert services.list_models() == []
