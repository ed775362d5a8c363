"""The search page of a non-classification search plots and tabulates the task's primary
metric in its own unit: the scatter's y is the candidates' MAE (or mean cosine), and the
per-layer sensitivity table reports the MAE each layer costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from web_support import RUN_TIMEOUT_MS

from helpers import linear_embedding, mlp_onnx
from tinymlaas.domain import Task
from tinymlaas.evaluation.runtime import OnnxRunner
from tinymlaas.service.searches import SearchRequest

pytestmark = pytest.mark.slow


def _search_page(page: Any, site: Any, ws: Any, request: SearchRequest) -> Any:
    search = ws.create_search(request)
    site.studio.searches.start(search.id)
    page.goto(f"/searches/{search.id}")
    page.wait_for_function("() => { const s = document.querySelector('#search-live');"
                           " return s && s.dataset.live === '0'; }", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => document.body.dataset.plotsReady === '1'"
                           " && document.querySelector('#search-plot').data !== undefined")
    return site.studio.searches.get(search.id)


def _trace(page: Any, name: str) -> dict[str, Any] | None:
    return page.evaluate("(name) => { const t = document.querySelector('#search-plot')"
                         ".data.find((t) => t.name === name);"
                         " return t ? {x: t.x, y: t.y} : null; }", name)


def test_a_regression_search_plots_and_probes_the_mae(signed_in: Any, site: Any,
                                                      tmp_path: Path) -> None:
    page = signed_in("mae@example.com")
    user = site.studio.accounts.store.find_user("mae@example.com")[0]
    ws = site.studio.accounts.workspace(user)
    path = mlp_onnx(tmp_path / "mlp.onnx", 1)
    model = ws.add_model(path, "mlp", task=Task.regression)
    X = np.random.default_rng(7).normal(size=(160, 16)).astype(np.float32)
    y = OnnxRunner(path).predict(X)  # the float model is exact: int8 can only lose
    np.savez(tmp_path / "values.npz", X=X, y=y)
    data = ws.add_dataset(str(tmp_path / "values.npz"), "values", task=Task.regression)

    # no MAE to spare: the int8 candidate misses it, and the report says which layer cost it
    search = _search_page(page, site, ws, SearchRequest(
        model=model.id, dataset=data.id, quality_budget="mae=0", max_trials=1, epochs=1))
    assert search.state.value == "succeeded" and search.recommended is None
    (c,) = search.candidates
    mae = site.studio.services.get_run(c.run_id).result["mae"]
    assert c.quality_metric == "mae" and c.quality == pytest.approx(mae)
    figure = page.evaluate("document.querySelector('#search-plot').layout")
    assert figure["yaxis"]["title"]["text"] == "MAE, lower is better"
    assert figure["title"]["text"] == "MAE vs size"
    assert _trace(page, "candidates")["y"] == pytest.approx([mae])
    base = site.studio.services.get_run(c.run_id).baseline["mae"]
    assert _trace(page, "input model")["y"] == pytest.approx([base])

    table = page.locator("#sensitivity-table")
    assert table.get_attribute("data-metric") == "mae"
    assert table.locator("thead th").nth(2).inner_text() == "MAE"
    quantized = {s.layer: s for s in search.sensitivity if s.probe == "quantize-int8"}
    assert set(quantized) == {"fc1", "fc2"}
    rows = table.locator("tbody tr")
    assert rows.count() == len(search.sensitivity)
    for row, probe in zip(rows.all(), search.sensitivity, strict=True):
        cells = [c.inner_text() for c in row.locator("td").all()]
        assert cells[:3] == [probe.layer, probe.probe, f"{probe.value:.4f}"]
        assert cells[3] == f"{probe.drop:+.4f}"
        assert abs(probe.drop - (probe.value - base)) < 1e-5


def test_an_embedding_search_plots_the_mean_cosine(signed_in: Any, site: Any,
                                                   tmp_path: Path) -> None:
    page = signed_in("cos@example.com")
    user = site.studio.accounts.store.find_user("cos@example.com")[0]
    ws = site.studio.accounts.workspace(user)
    model, data = linear_embedding(ws, tmp_path, 120, seed=3)
    search = _search_page(page, site, ws, SearchRequest(
        model=model.id, dataset=data.id, quality_budget="cosine=0.01", max_trials=1,
        epochs=1))
    measured = [c for c in search.candidates if c.quality is not None]
    assert len(measured) == 1 and search.recommended == measured[0].run_id
    figure = page.evaluate("document.querySelector('#search-plot').layout")
    assert figure["yaxis"]["title"]["text"] == "Mean cosine"
    ys = _trace(page, "candidates")["y"]
    assert ys == pytest.approx([c.quality for c in measured])
    assert all(0.9 < v <= 1.0 + 1e-9 for v in ys)  # a cosine, not an accuracy in points
    assert _trace(page, "input model")["y"] == [1.0]
    best = next(c for c in measured if c.run_id == search.recommended)
    assert _trace(page, "recommended")["y"] == pytest.approx([best.quality])
