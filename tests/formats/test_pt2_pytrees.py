"""``torch.export`` archives as people export them: integer ids into an embedding, several
inputs (some passed by keyword, some fixed at export), and outputs that are a Hugging Face
``ModelOutput``, a tuple or a dict. They register (the check runs them on ids within the
vocabulary and masks of ones), their outputs are flattened to named tensors, and they
evaluate like the eager model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hf_models import bert_config
from tinymlaas.domain import ArtifactKind, TensorSpec
from tinymlaas.evaluation.runtime import TorchRunner
from tinymlaas.formats.examples import SAFE_ID_RANGE, example_arrays
from tinymlaas.formats.models import inspect_model
from tinymlaas.formats.torch_models import example_inputs, example_tensors, load_torch_module

LIMIT = 10**9
VOCAB = 10  # under the 16 example ids: only the embedding's size keeps them valid


class Embedder(torch.nn.Module):
    """One integer input: ids into an embedding, mean-pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


class DictOut(Embedder):
    def forward(self, ids: torch.Tensor) -> dict[str, object]:
        hidden = self.embed(ids)
        return {"logits": self.head(hidden.mean(1)), "extra": (hidden, hidden.sum())}


def _export(module: torch.nn.Module, path: Path) -> Path:
    ids = torch.randint(0, VOCAB, (2, 8))
    dims = {"ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}}
    torch.export.save(torch.export.export(module.eval(), (ids,), dynamic_shapes=dims), str(path))
    return path


def test_a_single_integer_input_registers_with_ids_within_the_vocabulary(
        services, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Embedder()
    path = _export(module, tmp_path / "embedder.pt2")
    model = services.add_model(path, "embedder", description="ids in")
    assert model.kind is ArtifactKind.torch_exported
    assert [(s.name, s.dtype) for s in model.inputs] == [("ids", "int64")]
    assert model.inputs[0].shape[0] == "N" and isinstance(model.inputs[0].shape[1], str)
    assert [(s.name, s.shape, s.dtype) for s in model.outputs] == [
        ("output", ["N", 3], "float32")]
    example = example_tensors(path, model.kind, model.inputs)[0]
    assert example.dtype == torch.int64 and list(example.shape) == [1, 16]
    assert int(example.max()) == VOCAB - 1 < SAFE_ID_RANGE  # the embedding's size, found
    # evaluation feeds integer ids and matches the eager module
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(5, 12))
    runner = TorchRunner(services.artifacts.path(model.artifact_sha), model.kind, model.inputs)
    with torch.no_grad():
        want = module(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(runner.predict(ids), want, rtol=1e-5, atol=1e-6)


def test_a_dict_output_is_flattened_to_named_tensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _export(DictOut(), tmp_path / "dict.pt2")
    info = inspect_model(path, ArtifactKind.torch_exported, LIMIT)
    assert [(s.name, s.shape[0] if s.shape else None) for s in info.outputs] == [
        ("logits", "N"), ("extra.0", "N"), ("extra.1", None)]
    assert info.outputs[1].shape[1:] == [16, 8]  # sequence resolved to the example's 16
    outputs = load_torch_module(path, ArtifactKind.torch_exported)(
        *example_tensors(path, ArtifactKind.torch_exported, info.inputs))
    assert isinstance(outputs, tuple) and len(outputs) == 3


@pytest.fixture(scope="module")
def bert_archives(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """A tiny random BERT exported with torch.export twice: returning its ``ModelOutput``
    (attention mask by keyword, batch and sequence dynamic), and with ``return_dict=False``
    (a tuple; shapes fixed at 2 x 8)."""
    from transformers import BertModel

    torch.manual_seed(0)
    bert = BertModel(bert_config(layers=1, hidden=32, heads=2, vocab=VOCAB),
                     add_pooling_layer=False).eval()
    folder = tmp_path_factory.mktemp("pt2")
    ids = torch.randint(0, VOCAB, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=64)
    dims = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad():
        output = torch.export.export(bert, (ids,), {"attention_mask": mask},
                                     dynamic_shapes=dims)
        tupled = torch.export.export(bert, (ids,), {"attention_mask": mask,
                                                    "return_dict": False})
    torch.export.save(output, str(folder / "bert.pt2"))
    torch.export.save(tupled, str(folder / "bert-tuple.pt2"))
    return bert, folder / "bert.pt2", folder / "bert-tuple.pt2"


def test_a_hugging_face_model_output_registers_flattened(services, bert_archives) -> None:
    bert, with_output, with_tuple = bert_archives
    rng = np.random.default_rng(1)
    for path, output_name, rows, seq in ((with_output, "last_hidden_state", 3, 10),
                                         (with_tuple, "output", 2, 8)):
        ids = rng.integers(0, VOCAB, size=(rows, seq))
        mask = np.ones_like(ids)
        mask[0, seq - 3:] = 0
        with torch.no_grad():
            want = bert(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)) \
                .last_hidden_state.numpy()
        X = np.empty(rows, dtype=[("input_ids", np.int64, (seq,)),
                                  ("attention_mask", np.int64, (seq,))])
        X["input_ids"], X["attention_mask"] = ids, mask
        model = services.add_model(path, path.stem)
        assert [(s.name, s.dtype) for s in model.inputs] == [("input_ids", "int64"),
                                                              ("attention_mask", "int64")]
        example_seq = 16 if path is with_output else 8
        assert [(s.name, s.shape) for s in model.outputs] == [
            (output_name, ["N", example_seq, 32])]
        example = dict(zip([s.name for s in model.inputs],
                           example_tensors(path, model.kind, model.inputs), strict=True))
        assert int(example["input_ids"].max()) == VOCAB - 1
        assert bool((example["attention_mask"] == 1).all())
        runner = TorchRunner(services.artifacts.path(model.artifact_sha), model.kind,
                             model.inputs)
        np.testing.assert_allclose(runner.predict(X), want, rtol=1e-4, atol=1e-5)


def test_example_arrays_follow_names_dtypes_and_vocabulary() -> None:
    specs = [TensorSpec(name="input_ids", shape=["batch", "sequence"], dtype="int64"),
             TensorSpec(name="attention_mask", shape=["batch", "sequence"], dtype="int64"),
             TensorSpec(name="token_type_ids", shape=["batch", "sequence"], dtype="int64"),
             TensorSpec(name="pixel_values", shape=["batch", 3, 4, 4], dtype="float32"),
             TensorSpec(name="other_ids", shape=["batch", 300], dtype="int32")]
    arrays = example_arrays(specs, {"input_ids": 7})
    assert arrays["input_ids"].shape == (1, 16) and arrays["input_ids"].dtype == np.int64
    assert arrays["input_ids"].max() == 6 and arrays["input_ids"].min() == 0
    assert (arrays["attention_mask"] == 1).all() and (arrays["token_type_ids"] == 0).all()
    assert arrays["pixel_values"].shape == (1, 3, 4, 4) and not arrays["pixel_values"].any()
    assert arrays["other_ids"].dtype == np.int32 and arrays["other_ids"].max() == \
        SAFE_ID_RANGE - 1


def test_example_inputs_of_a_torchscript_file_follow_the_given_shape(tmp_path: Path) -> None:
    scripted = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(scripted))
    specs = example_inputs(scripted, ArtifactKind.torchscript, [4])
    (tensor,) = example_tensors(scripted, ArtifactKind.torchscript, specs)
    assert tensor.dtype == torch.float32 and list(tensor.shape) == [1, 4]


def test_export_onnx_of_a_model_output_archive_keeps_its_input_names(
        run_transformer, bert_archives) -> None:
    import onnxruntime as ort

    bert, with_output, _ = bert_archives
    out = run_transformer("export-onnx", with_output, ArtifactKind.torch_exported)
    session = ort.InferenceSession(str(out.path))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(2, 12))
    mask = np.ones_like(ids)
    with torch.no_grad():
        want = bert(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)) \
            .last_hidden_state.numpy()
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
