"""A degraded run over the API and in the web: its status, the figure and the threshold,
shown in red; its output can still be downloaded; compare lists it with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from web_support import sign_in, text_of

from helpers import linear_onnx


def test_a_degraded_run_is_shown_with_its_figure(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "grace@example.com")
    model = api.upload_model(linear_onnx(tmp_path / "embed.onnx", 32, 16, seed=3),
                             name="embed")
    X = np.random.default_rng(4).normal(size=(120, 32)).astype(np.float32)
    np.savez(tmp_path / "sentences.npz", X=X, y=np.zeros(len(X), np.float32))
    dataset = api.upload_dataset(tmp_path / "sentences.npz", name="sentences",
                                 task="embedding")
    ok = api.follow(api.create_run(model.id, dataset.id, pipeline={
        "name": "dyn", "steps": ["quantize-dynamic"]}).id)
    bad = api.follow(api.create_run(model.id, dataset.id, pipeline={
        "name": "dyn-strict", "steps": ["quantize-dynamic"],
        "fidelity": {"min_cosine": 1.0}}).id)
    assert ok.status == "succeeded" and bad.status == "degraded"
    cosine = bad.result["cosine_mean"]
    assert bad.result["fidelity"]["threshold"] == 1.0
    auth = {"Authorization": f"Bearer {api.token}"}
    listed = http.get("/api/v1/runs", params={"status": "degraded"}, headers=auth).json()
    assert [r["id"] for r in listed] == [bad.id]
    refused = http.post("/api/v1/runs", headers=auth, json={
        "model": model.id, "dataset": dataset.id,
        "pipeline": {"steps": ["fuse"], "fidelity": {"min_cosine": 3}}})
    assert refused.status_code == 400 and "fidelity.min_cosine" in refused.text
    # the user decides: the output of a degraded run downloads
    assert http.get(f"/api/v1/runs/{bad.id}/output", headers=auth).status_code == 200

    page = http.get(f"/runs/{bad.id}")
    assert page.status_code == 200
    assert 'class="badge s-degraded"' in page.text
    assert 'data-degraded="cosine_mean"' in page.text
    text = text_of(page.text)
    assert f"mean cosine to the input model's outputs is {cosine:.4f}" in text
    assert "under the 1 fidelity threshold" in text
    assert f"{cosine:.4f}" in text and "Cosine to the input model (mean · p5 · min)" in text

    project = bad.project
    compare = http.get(f"/projects/{project}/compare", params={"run": [ok.id, bad.id]})
    assert compare.status_code == 200
    text = text_of(compare.text)
    assert f"mean cosine {cosine:.4f}" in text and "degraded" in text
    assert "fidelity threshold" in text
    dashboard = text_of(http.get(f"/projects/{project}").text)
    assert f"mean cosine {cosine:.4f}" in dashboard


def test_a_search_with_a_cosine_budget_from_the_web_form(http: TestClient,
                                                          tmp_path: Path) -> None:
    import re
    import time

    api = sign_in(http, "hedy@example.com")
    project = api.me().default_project
    model = api.upload_model(linear_onnx(tmp_path / "embed.onnx", 32, 16, seed=3),
                             name="embed")
    X = np.random.default_rng(4).normal(size=(120, 32)).astype(np.float32)
    np.savez(tmp_path / "sentences.npz", X=X, y=np.zeros(len(X), np.float32))
    data = api.upload_dataset(tmp_path / "sentences.npz", name="sentences", task="embedding")
    form = http.get(f"/projects/{project}/searches/new")
    assert 'name="quality_budget"' in form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    base = {"model": model.id, "dataset": data.id, "max_accuracy_drop": "1", "budget": "5m",
            "max_trials": "1", "epochs": "1", "csrf_token": token}
    wrong = http.post(f"/projects/{project}/searches",
                      data={**base, "quality_budget": "accuracy=1"}, follow_redirects=False)
    assert wrong.status_code == 400
    assert "its task is embedding" in text_of(wrong.text)
    made = http.post(f"/projects/{project}/searches",
                     data={**base, "quality_budget": "cosine=0.01"}, follow_redirects=False)
    assert made.status_code == 303, text_of(made.text)[:500]
    search_id = made.headers["location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 300
    while (search := api.get_search(search_id)).state.value in {"queued", "running"}:
        assert time.monotonic() < deadline, "the search did not finish"
        time.sleep(0.5)
    assert search.quality_budget == "cosine=0.01" and search.recommended
    (c,) = search.candidates
    page = text_of(http.get(f"/searches/{search_id}").text)
    assert "quality budget cosine=0.01" in page
    assert f"mean cosine {c.quality:,.4f}" in page


def test_the_task_metric_bar_chart_is_named_after_the_shared_metric() -> None:
    from tinymlaas.domain.quality import quality_summary
    from tinymlaas.service.compare import ComparisonRow
    from tinymlaas.web.charts import bar_figures

    rows = [ComparisonRow(run_id=f"r{i}", name=f"r{i}", status=s, steps=[], reference="x",
                          quality=quality_summary({}, {"task": "embedding",
                                                       "cosine_mean": c}))
            for i, (s, c) in enumerate([("succeeded", 0.993), ("degraded", 0.34)])]
    figure = bar_figures(rows)["quality"]
    assert figure["layout"]["title"]["text"] == "Mean cosine"
    assert figure["data"][0]["x"] == [0.993, 0.34]
    mixed = [*rows, ComparisonRow(run_id="c", name="c", status="succeeded", steps=[],
                                  reference="x", quality=quality_summary(
                                      {"accuracy": 90.0}, {"accuracy": 89.0}))]
    assert bar_figures(mixed)["quality"]["layout"]["title"]["text"] == "Task metric"
