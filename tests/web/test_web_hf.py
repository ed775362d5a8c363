"""The web pages import a Hugging Face repo (from the offline cache here) and upload a text
dataset tokenized with that model's tokenizer; an uncached repo offline shows the 503."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_support import csrf_of, sign_in, text_of

from hf_folders import write_bert_folder, write_hub_cache


def test_hub_import_and_text_upload_forms(http: TestClient, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    api = sign_in(http, "ada@example.com")
    cache = tmp_path / "hf-cache"
    write_hub_cache(cache, "org/tiny-bert", write_bert_folder(tmp_path / "bert"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert 'id="hub-form"' in http.get("/models").text

    absent = http.post("/models/hub", data={"csrf_token": csrf_of(http, "/models"),
                                            "repo_id": "org/absent"}, follow_redirects=False)
    assert absent.status_code == 503
    assert "cannot be reached" in text_of(absent.text)
    done = http.post("/models/hub", data={"csrf_token": csrf_of(http, "/models"),
                                          "repo_id": "hf:org/tiny-bert", "name": "bert"},
                     follow_redirects=False)
    assert done.status_code == 303, text_of(done.text)[:500]
    model = api.list_models()[0]
    assert (model.name, model.task, len(model.inputs)) == ("bert", "embedding", 3)

    page = http.get("/datasets").text
    assert f'<option value="{model.id}">bert</option>' in page
    data = tmp_path / "sentences.csv"
    data.write_text("sentence\nthe cat sat\na good movie\nnot great\nawful plot\n")
    fields = {"csrf_token": csrf_of(http, "/datasets"), "tokenizer": model.id,
              "text_column": "sentence", "max_length": "12", "padding": "longest"}
    with data.open("rb") as fh:
        added = http.post("/datasets", data=fields, files={"file": (data.name, fh)},
                          follow_redirects=False)
    assert added.status_code == 303, text_of(added.text)[:500]
    dataset = api.list_datasets()[0]
    assert (dataset.source_format, dataset.task, dataset.num_samples) == ("text", "embedding", 4)
    with data.open("rb") as fh:
        refused = http.post("/datasets", data={**fields, "text_column": "body",
                                               "csrf_token": csrf_of(http, "/datasets")},
                            files={"file": (data.name, fh)}, follow_redirects=False)
    assert refused.status_code == 400
    assert re.search(r"column 'body' is not in \S+; columns: sentence", text_of(refused.text))
