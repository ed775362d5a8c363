"""Hugging Face model folders to ONNX: outputs match torch, the tokenizer travels inside the
file, pickled weights and remote code are refused, text files tokenize into model inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hf_folders import COMMIT, tiny_tokenizer, write_bert_folder, write_hub_cache
from tinymlaas.domain import Task
from tinymlaas.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsafeInputError,
    UnsupportedModelError,
)
from tinymlaas.formats.huggingface import (
    HF_FILES_KEY,
    export_model_folder,
    kept_files,
    model_tokenizer,
    resolve_model_folder,
)
from tinymlaas.formats.text_datasets import TextOptions, tokenize_text_file

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT folder and its ONNX export (exported once for the module)."""
    root = tmp_path_factory.mktemp("bert")
    folder = write_bert_folder(root / "tiny-bert")
    exported = export_model_folder(folder, root / "model.onnx", source="tiny-bert",
                                   max_bytes=10**9)
    assert exported.task is Task.embedding and exported.architecture == "BertModel"
    assert exported.inputs == INPUTS and exported.has_tokenizer
    return folder, exported.path


def test_onnx_outputs_match_torch_for_any_batch_and_length(bert: tuple[Path, Path]) -> None:
    import torch

    from transformers import AutoModel

    folder, onnx_path = bert
    session = ort.InferenceSession(str(onnx_path))
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == \
        [(n, "tensor(int64)", ["batch", "sequence"]) for n in INPUTS]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = tiny_tokenizer()
    for texts, length in ((["the cat sat on the mat"], 9),
                          (["a very good movie", "bad plot but great acting", "it"], 13)):
        feed = {k: np.asarray(v, np.int64) for k, v in tokenizer(
            texts, padding="max_length", max_length=length, truncation=True,
            return_tensors="np").items()}
        assert feed["attention_mask"].min() == 0 or len(texts) == 1  # padding is exercised
        got = session.run(None, feed)
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        np.testing.assert_allclose(got[0], want.last_hidden_state.numpy(), atol=1e-4)
        np.testing.assert_allclose(got[1], want.pooler_output.numpy(), atol=1e-4)
        assert got[0].shape == (len(texts), length, 32)


def test_tokenizer_and_config_travel_inside_the_onnx_file(bert: tuple[Path, Path]) -> None:
    import onnx

    _, onnx_path = bert
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    files = kept_files(meta)
    assert {"tokenizer.json", "tokenizer_config.json", "config.json"} <= set(files)
    # stored deflated: the tokenizer's bytes count in every size ratio of the model
    assert len(meta[HF_FILES_KEY]) < len(json.dumps(files)) / 2
    # models imported before keep plain JSON, and still read
    assert kept_files({HF_FILES_KEY: json.dumps(files)}) == files
    assert json.loads(files["config.json"])["num_hidden_layers"] == 2
    kept = model_tokenizer(onnx_path)
    texts = ["The cat sat", "awful films, not great"]
    assert kept(texts, padding="max_length", max_length=10)["input_ids"] == \
        tiny_tokenizer()(texts, padding="max_length", max_length=10)["input_ids"]


def test_kept_files_that_inflate_past_the_bound_or_do_not_decode_read_as_none() -> None:
    import base64
    import zlib

    bomb = zlib.compress(b'{"tokenizer.json": "' + b"a" * (200 * 1024**2) + b'"}', 9)
    assert len(bomb) < 1024**2
    for value in ("zlib+base64:" + base64.b64encode(bomb).decode(), "zlib+base64:***",
                  "zlib+base64:" + base64.b64encode(b"not deflate").decode(), "[1, 2]", "{"):
        assert kept_files({HF_FILES_KEY: value}) == {}


def test_a_model_without_a_tokenizer_is_refused_for_text(tmp_path: Path) -> None:
    from encoder_models import write_encoder

    with pytest.raises(InvalidInputError, match="has no tokenizer"):
        model_tokenizer(write_encoder(tmp_path / "plain.onnx"))


def test_pickled_weights_are_refused_before_anything_is_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeInputError, match=r"pickles \(pytorch_model.bin\).*safetensors"):
        export_model_folder(folder, tmp_path / "out.onnx", source="x", max_bytes=10**9)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(InvalidInputError, match="no safetensors weights"):
        export_model_folder(folder, tmp_path / "out.onnx", source="x", max_bytes=10**9)


def test_remote_code_is_never_run(tmp_path: Path, bert: tuple[Path, Path]) -> None:
    folder = tmp_path / "remote"
    folder.mkdir()
    for file in bert[0].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom-thing", auto_map={"AutoModel": "modeling_x.XModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text("raise SystemExit('foreign code ran')\n")
    with pytest.raises(UnsupportedModelError, match=r"config\.json cannot be used"):
        export_model_folder(folder, tmp_path / "out.onnx", source="x", max_bytes=10**9)


def test_weights_over_the_limit_are_refused(bert: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLargeError, match="the limit is 1000"):
        export_model_folder(bert[0], tmp_path / "out.onnx", source="x", max_bytes=1000)


def test_a_cache_folder_resolves_to_its_snapshot(bert: tuple[Path, Path], tmp_path: Path) -> None:
    repo = write_hub_cache(tmp_path / "hub", "org/tiny-bert", bert[0])
    assert resolve_model_folder(repo) == repo / "snapshots" / COMMIT
    assert resolve_model_folder(repo, COMMIT) == repo / "snapshots" / COMMIT
    with pytest.raises(InvalidInputError, match="revision 'v2' is not in this cache folder"):
        resolve_model_folder(repo, "v2")
    with pytest.raises(InvalidInputError, match=r"no config\.json"):
        resolve_model_folder(tmp_path)


# text datasets ------------------------------------------------------------------------------

def _tokenize(path: Path, options: TextOptions, **kwargs: object):
    return tokenize_text_file(path, tiny_tokenizer(), INPUTS, options,
                              max_bytes=kwargs.pop("max_bytes", 10**8),  # type: ignore[arg-type]
                              max_classes=100, **kwargs)  # type: ignore[arg-type]


def test_csv_with_pairs_and_text_labels(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('premise,hypothesis,label\n"the cat sat","a cat sat",same\n'
                    '"the dog, it sat","the mat",other\nthe film,the movie,same\n')
    data = _tokenize(path, TextOptions("m", text_column="premise",
                                       text_pair_column="hypothesis", max_length=12),
                     label_column="label")
    assert data.X.dtype.names == tuple(INPUTS)
    assert all(data.X.dtype[n].base == np.int64 and data.X.dtype[n].shape == (12,)
               for n in INPUTS)
    assert data.task is Task.classification and data.class_names == ["other", "same"]
    assert data.y.tolist() == [1, 0, 1]
    want = tiny_tokenizer()("the cat sat", "a cat sat", padding="max_length", max_length=12)
    assert data.X["input_ids"][0].tolist() == want["input_ids"]
    assert data.X["token_type_ids"][0].tolist() == want["token_type_ids"]
    assert data.X["token_type_ids"][0].max() == 1  # the pair is marked as the second segment


def test_jsonl_unlabelled_padded_to_the_longest(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    lines = [{"text": "a good movie"}, {"text": "the cat sat on the mat"}, {"text": "it"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    data = _tokenize(path, TextOptions("m", max_length=64, padding="longest"))
    assert data.task is Task.embedding and len(data.X) == 3 and data.class_names == []
    assert data.X.dtype["input_ids"].shape == (8,)  # [CLS] + 6 words + [SEP]
    assert data.X["attention_mask"].sum(axis=1).tolist() == [5, 8, 3]


def test_jsonl_numeric_labels_mean_regression_or_classes(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"movie {i}", "score": i * 0.25})
                              for i in range(5)))
    data = _tokenize(path, TextOptions("m", max_length=8), label_column="score")
    assert data.task is Task.regression and data.y.dtype == np.float32
    assert data.y.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(("content", "suffix", "options", "message"), [
    ("", ".csv", {}, "is empty"),
    ("text,label\n", ".csv", {}, "has no rows of text"),
    ("body,label\nhello,1\n", ".csv", {}, "column 'text' is not in .*columns: body, label"),
    ('{"body": "hi"}\n', ".jsonl", {}, "column 'text' is not in"),
    ('{"text": "hi"}\n{"txt": "x"}\n', ".jsonl", {}, "line 2 has no 'text'"),
    ('["text"]\n', ".jsonl", {}, "line 1 is not a JSON object"),
    ('{"text": 5}\n', ".jsonl", {}, "'text' must be text; got int"),
    ("text\n" + "word " * 30_000 + "\n", ".csv", {}, "100000 characters"),
    ('{"text": "' + "w" * (1024**2) + '"}\n', ".jsonl", {}, "longer than 1048576 bytes"),
])
def test_bad_text_files_are_refused_in_one_line(tmp_path: Path, content: str, suffix: str,
                                                options: dict, message: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        _tokenize(path, TextOptions("m", **options))


def test_token_arrays_are_capped_by_the_dataset_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("text\n" + "the cat\n" * 100)
    with pytest.raises(PayloadTooLargeError, match="use a smaller max_length"):
        _tokenize(path, TextOptions("m", max_length=128), max_bytes=50_000)


def test_text_options_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="max_length must be 2 to 8192"):
        TextOptions("m", max_length=100_000)
    with pytest.raises(InvalidInputError, match="padding must be max_length or longest"):
        TextOptions("m", padding="shortest")  # type: ignore[arg-type]
