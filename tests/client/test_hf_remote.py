"""The CLI with ``--server`` and Hugging Face models: ``hf:ORG/NAME`` is imported by the
server (from its offline cache here), a local folder is exported on the client and uploaded,
and a text dataset is tokenized by the server with the model's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_folders import COMMIT, write_bert_folder, write_hub_cache
from tinymlaas.api.testing import LiveServer
from tinymlaas.client import Client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_remote_hf_models_and_text(live: LiveServer, sdk: Client, cli, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_bert_folder(tmp_path / "local-bert")
    write_hub_cache(tmp_path / "hf-cache", "org/tiny-bert", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server = ("--server", live.url, "--token", sdk.create_token("cli").token)

    code, out, err = cli(*server, "models", "add", "hf:org/tiny-bert", "--json")
    assert code == 0, err
    hub = json.loads(out)
    assert hub["name"] == "tiny-bert" and hub["description"].startswith(
        f"hf:org/tiny-bert@{COMMIT}")
    code, out, err = cli(*server, "models", "add", folder, "--name", "mine", "--json")
    assert code == 0, err
    mine = json.loads(out)
    assert mine["task"] == "embedding" and mine["parameters"] == hub["parameters"]
    assert [t["name"] for t in mine["inputs"]] == [t["name"] for t in hub["inputs"]] == \
        ["input_ids", "attention_mask", "token_type_ids"]

    data = tmp_path / "lines.jsonl"
    data.write_text("".join(json.dumps({"q": q}) + "\n" for q in ("the cat", "a dog sat")))
    code, out, err = cli(*server, "datasets", "add", data, "--tokenizer", "mine",
                         "--text-column", "q", "--max-length", "6", "--json")
    assert code == 0, err
    dataset = json.loads(out)
    assert (dataset["source_format"], dataset["num_samples"]) == ("text", 2)
    code, _, err = cli(*server, "models", "add", "hf:org/absent")
    assert code == 7 and "cannot be reached" in err
