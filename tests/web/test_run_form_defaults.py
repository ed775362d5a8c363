"""The next step after registering a model is the platform's default int8 (auto-int8, or
export-onnx then auto-int8 for a PyTorch model), and the new-run form takes the fidelity
gate's thresholds, checked on the server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from web_support import RUN_TIMEOUT_MS, csrf_of, sign_in, text_of

from helpers import linear_onnx
from tinymlaas.domain import Task

pytestmark = pytest.mark.slow


def _embedding_data(tmp_path: Path) -> Path:
    X = np.random.default_rng(4).normal(size=(120, 32)).astype(np.float32)
    np.savez(tmp_path / "sentences.npz", X=X, y=np.zeros(len(X), np.float32))
    return tmp_path / "sentences.npz"


def test_a_new_model_is_offered_auto_int8_and_the_run_takes_a_fidelity_gate(
        signed_in: Any, site: Any, tmp_path: Path) -> None:
    page = signed_in("nina@example.com")
    project = page.url.rsplit("/", 1)[1]
    user = site.studio.accounts.store.find_user("nina@example.com")[0]
    ws = site.studio.accounts.workspace(user)
    dataset = ws.add_dataset(str(_embedding_data(tmp_path)), "sentences", task=Task.embedding)
    scripted = tmp_path / "scripted.pt"
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32, 16)).eval()
    torch.jit.save(torch.jit.script(module), str(scripted))
    ws.add_model(scripted, "scripted", input_shape=[32])

    # Upload through the form: the page says what to do next, and links to it.
    page.goto("/models")
    page.set_input_files("#model-file", str(linear_onnx(tmp_path / "embed.onnx", 32, 16,
                                                        seed=3)))
    page.get_by_label("Name (optional)", exact=True).first.fill("embed")
    page.locator("#model-task").select_option("embedding")
    page.locator("#model-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/models\?added=model-"))
    model_id = page.url.rsplit("=", 1)[1]
    note = page.locator("#next-step")
    assert "default int8, auto-int8" in note.inner_text()
    assert page.locator("#next-run").inner_text() == "Run auto-int8 on it"
    page.locator("#next-run").click()
    page.wait_for_url(re.compile(rf"/projects/{project}/runs/new\?model={model_id}"))
    assert page.locator("#model").input_value() == model_id
    assert page.locator("#template").input_value() == "auto-int8"

    # A PyTorch model is exported first: the template follows the model until one is picked.
    scripted_id = page.locator("#model option", has_text="scripted").get_attribute("value")
    page.locator("#model").select_option(scripted_id)
    page.wait_for_function("() => document.querySelector('#template').value"
                           " === 'export-auto-int8'")
    page.locator("#model").select_option(model_id)
    page.wait_for_function("() => document.querySelector('#template').value === 'auto-int8'")

    # The threshold of the dataset's task is marked; a bad one is refused with its field.
    page.locator("#dataset").select_option(dataset.id)
    page.wait_for_function("() => document.querySelector("
                           "'#fidelity .field.current input').id === 'fidelity_min_cosine'")
    page.locator("#fidelity summary").click()
    page.get_by_label("Embedding: smallest mean cosine to the input model").fill("1.5")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_selector("#fidelity_min_cosine-error")
    assert "from -1 to 1" in page.locator("#fidelity_min_cosine-error").inner_text()
    assert page.locator("#fidelity").get_attribute("open") is not None
    assert page.locator("#fidelity_min_cosine").input_value() == "1.5"
    assert ws.list_runs(project) == []

    # A cosine of 1.0 is out of reach of int8: the run ends degraded on that threshold.
    page.locator("#fidelity_min_cosine").fill("1")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/run-[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    page.wait_for_function("() => document.querySelector('#run-status')"
                           ".dataset.status === 'degraded'", timeout=RUN_TIMEOUT_MS)
    run = site.studio.services.get_run(run_id)
    assert [s.transformer for s in run.steps] == ["auto-int8"]
    assert run.pipeline.fidelity is not None and run.pipeline.fidelity.min_cosine == 1.0
    assert run.result["fidelity"]["threshold"] == 1.0
    page.wait_for_selector("[data-degraded=cosine_mean]")
    assert "under the 1 fidelity threshold" in page.locator("body").inner_text(), run.error


def test_fidelity_fields_are_checked_on_the_server(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "omar@example.com")
    project = api.me().default_project
    model = api.upload_model(linear_onnx(tmp_path / "embed.onnx", 32, 16, seed=3),
                             name="embed")
    dataset = api.upload_dataset(_embedding_data(tmp_path), name="sentences",
                                 task="embedding")
    page = http.get(f"/projects/{project}/runs/new", params={"model": model.id})
    assert re.search(r'<option value="auto-int8"\s+selected', page.text)
    assert 'placeholder="0.95"' in page.text and 'placeholder="off"' in page.text
    base = {"model": model.id, "dataset": dataset.id, "mode": "template",
            "template": "auto-int8", "evaluate": "1",
            "csrf_token": csrf_of(http, f"/projects/{project}/runs/new")}
    for field, value, expected in (
            ("fidelity_min_cosine", "high", "fidelity threshold for embedding (smallest mean "
             "cosine to the input model): 'high' is not a number"),
            ("fidelity_min_cosine", "nan", "give a finite number from -1 to 1"),
            ("fidelity_max_accuracy_drop", "101", "give a finite number from 0 to 100"),
            ("fidelity_min_snr_db", "-1e9", "from -200 to 400"),
            ("fidelity_max_auc_drop", "2", "from 0 to 1")):
        answer = http.post(f"/projects/{project}/runs", data={**base, field: value},
                           follow_redirects=False)
        assert answer.status_code == 400, (field, value)
        text = text_of(answer.text)
        assert expected in text, (field, text[:400])
        assert f'id="{field}-error"' in answer.text
    assert api.list_runs() == []

    done = http.post(f"/projects/{project}/runs", follow_redirects=False, data={
        **base, "fidelity_min_cosine": " 0.5 ", "fidelity_max_accuracy_drop": "off",
        "fidelity_max_mae_increase_pct": "10"})
    assert done.status_code == 303, text_of(done.text)[:400]
    run = api.follow(done.headers["location"].rsplit("/", 1)[1])
    assert run.pipeline["fidelity"] == {"max_accuracy_drop": None, "min_cosine": 0.5,
                                        "min_snr_db": 20.0, "max_mae_increase_pct": 10.0,
                                        "max_auc_drop": 0.05}
    assert run.status == "succeeded" and run.result["cosine_mean"] > 0.5
    # no threshold given: the template's gate (the defaults)
    plain = http.post(f"/projects/{project}/runs", data=base, follow_redirects=False)
    assert plain.status_code == 303
    other = api.follow(plain.headers["location"].rsplit("/", 1)[1])
    assert other.pipeline.get("fidelity") is None
