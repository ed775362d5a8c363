"""The API with a model of several inputs: the model document lists every input and output,
an NPZ with one array per input uploads, and a run whose dataset lacks an input is refused
with 422 naming it."""

from __future__ import annotations

import numpy as np
import pytest

from encoder_models import INPUTS, token_arrays, write_encoder
from tinymlaas.errors import IncompatibleChainError


def test_model_document_inputs_and_a_mismatched_run(alice, tmp_path) -> None:
    model = alice.upload_model(write_encoder(tmp_path / "encoder.onnx"), name="encoder")
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [
        (n, "int64", ["batch", "sequence"]) for n in INPUTS]
    assert [t.name for t in model.outputs] == ["logits", "pooled"]
    arrays = token_arrays(30)
    np.savez(tmp_path / "tokens.npz", **arrays)
    full = alice.upload_dataset(tmp_path / "tokens.npz", name="tokens")
    assert full.task == "embedding" and full.num_samples == 30
    del arrays["attention_mask"]
    np.savez(tmp_path / "partial.npz", **arrays)
    alice.upload_dataset(tmp_path / "partial.npz", name="partial")
    pipeline = {"name": "q", "steps": ["quantize-dynamic"]}
    with pytest.raises(IncompatibleChainError, match="no array for model input "
                       "'attention_mask'") as caught:
        alice.create_run("encoder", "partial", pipeline=pipeline)
    assert caught.value.details["http_status"] == 422
    assert caught.value.details["input"] == "attention_mask"
    assert alice.list_runs() == []
    assert alice.create_run("encoder", "tokens", pipeline=pipeline).model_id == model.id
