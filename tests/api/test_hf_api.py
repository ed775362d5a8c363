"""The API imports a whole Hugging Face model repo (``POST /models/hub`` without a file name)
from the offline cache, says 503 when the Hub cannot be reached, and tokenizes an uploaded
text dataset with the model's tokenizer."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from api_support import API, assert_error_shape
from fastapi.testclient import TestClient

from hf_folders import COMMIT, write_bert_folder, write_hub_cache
from tinymlaas.client import Client

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_repo_import_and_text_upload(http: TestClient, alice: Client, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf-cache"
    write_hub_cache(cache, "org/tiny-cls", write_bert_folder(tmp_path / "cls", classes=3))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    headers = {"Authorization": f"Bearer {alice.token}"}

    model = alice.import_model("org/tiny-cls")
    assert (model.name, model.kind, model.task) == ("tiny-cls", "onnx", "classification")
    assert model.description.startswith(f"hf:org/tiny-cls@{COMMIT}: "
                                        "BertForSequenceClassification")
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == \
        [(n, "int64", ["batch", "sequence"]) for n in INPUTS]
    assert [(t.name, t.shape) for t in model.outputs] == [("logits", ["batch", 3])]

    # offline and not cached, or a Hub that does not answer: 503, never 404
    missing = http.post(f"{API}/models/hub", headers=headers, json={"repo_id": "org/absent"})
    assert missing.status_code == 503
    assert_error_shape(missing.json(), "service_unavailable")
    assert "HF_HUB_OFFLINE=1" in missing.json()["message"]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    closed = http.post(f"{API}/models/hub", headers=headers,
                       json={"repo_id": "org/absent", "revision": "main"})
    assert closed.status_code == 503
    assert_error_shape(closed.json(), "service_unavailable")
    shaped = http.post(f"{API}/models/hub", headers=headers,
                       json={"repo_id": "org/tiny-cls", "input_shape": [8]})
    assert shaped.status_code == 400

    # text: labelled JSONL tokenized with the imported model's tokenizer
    data = tmp_path / "reviews.jsonl"
    texts = ["a good movie", "awful plot", "the cat sat", "very bad acting", "great film"]
    data.write_text("".join(json.dumps({"text": t, "label": t.split()[-1]}) + "\n"
                            for t in texts * 4))
    dataset = alice.upload_dataset(data, tokenizer="tiny-cls", label_column="label",
                                   max_length=10)
    assert (dataset.source_format, dataset.task, dataset.num_samples) == \
        ("text", "classification", 20)
    assert dataset.class_names == sorted({t.split()[-1] for t in texts})
    with np.load(alice.download_dataset(dataset.id, tmp_path / "got.npz")) as npz:
        X = npz["X"]
    assert X.dtype.names == tuple(INPUTS) and X["input_ids"].shape == (20, 10)
    assert X["input_ids"].dtype == np.int64 and X["input_ids"][:, 0].tolist() == [2] * 20

    bad = http.post(f"{API}/datasets", headers=headers,
                    params={"tokenizer": "tiny-cls", "text_column": "body", "max_length": 10,
                            "filename": "r.jsonl"}, content=data.read_bytes())
    assert bad.status_code == 400
    assert "column 'body' is not in" in bad.json()["message"]
    # The default max_length (128) is more than the model's 64 positions: said before reading.
    long = http.post(f"{API}/datasets", headers=headers,
                     params={"tokenizer": "tiny-cls", "filename": "r.jsonl"},
                     content=data.read_bytes())
    assert long.status_code == 400
    assert "use a max_length of at most 64" in long.json()["message"]
    for params, status in (({"tokenizer": "nope"}, 404), ({"max_length": 1}, 422),
                           ({"padding": "shortest"}, 422)):
        answer = http.post(f"{API}/datasets", headers=headers,
                           params={"tokenizer": "tiny-cls", "filename": "r.jsonl", **params},
                           content=data.read_bytes())
        assert answer.status_code == status, answer.text
    assert [d.name for d in alice.list_datasets()] == ["reviews"]

    # a text file in a dataset repo of the (offline) cache, tokenized the same way
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = cache / "datasets--org--reviews" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "train.jsonl").write_bytes(data.read_bytes())
    (cache / "datasets--org--reviews" / "refs").mkdir()
    (cache / "datasets--org--reviews" / "refs" / "main").write_text(COMMIT)
    hub_data = alice.import_dataset("org/reviews", "train.jsonl", name="hub-reviews",
                                    tokenizer="tiny-cls", padding="longest", max_length=64)
    assert (hub_data.source_format, hub_data.task, hub_data.num_samples) == \
        ("text", "embedding", 20)
    no_column = http.post(f"{API}/datasets/hub", headers=headers, json={
        "repo_id": "org/reviews", "filename": "train.jsonl", "tokenizer": "tiny-cls",
        "text_column": "review", "max_length": 64})
    assert no_column.status_code == 400 and "column 'review'" in no_column.json()["message"]
