"""The run page's "Layers" chart, over plain HTTP: a run whose output is generated C or an
ONNX model the compiler can lower shows live arena bytes and MACs per kernel call, one
point per call, as JSON the page's script draws (no inline script: the CSP forbids it)."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_support import PASSWORD

from helpers import small_cnn_onnx
from tinymlaas.compiler.profile import profile_model
from tinymlaas.domain import Pipeline, RunStatus
from tinymlaas.web.session import SESSION_COOKIE

EMAIL = "lena-layers@example.com"


def _finish(site: Any, run: Any) -> Any:
    site.studio.runs.submit_run(run)
    deadline = time.monotonic() + 300
    while site.studio.services.get_run(run.id).status not in {RunStatus.succeeded,
                                                             RunStatus.failed}:
        assert time.monotonic() < deadline, f"run {run.id} did not finish"
        time.sleep(0.3)
    done = site.studio.services.get_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    return done


@pytest.fixture(scope="module")
def runs(site: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs of a small CNN ending in generated C (compile-c, arena and caller I/O) and in
    an ONNX model (fuse), not evaluated."""
    accounts = site.studio.accounts
    user = accounts.register(EMAIL, PASSWORD, "Lena")
    assert user is not None
    ws = accounts.workspace(user)
    path = small_cnn_onnx(tmp_path_factory.mktemp("layers") / "cnn.onnx")
    model = ws.add_model(path, "cnn")
    dataset = ws.add_dataset("digits")  # compile-c's calibration split (8x8 images)
    made = {
        "c": Pipeline(name="to-c", evaluate=False, steps=[
            {"transformer": "compile-c", "params": {"verify_samples": 0}}]),
        "c-caller": Pipeline(name="to-c-caller", evaluate=False, steps=[
            {"transformer": "compile-c", "params": {"io": "caller", "verify_samples": 0}}]),
        "onnx": Pipeline(name="fused", steps=["fuse"], evaluate=False),
    }
    out = {k: _finish(site, ws.create_run(p, model=model.id, dataset=dataset.id))
           for k, p in made.items()}
    _token, secret = accounts.login(EMAIL, PASSWORD)
    return {**out, "secret": secret, "path": path}


def _figure(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="layers-figure">(.*?)</script>',
                      page, re.S)
    assert match, "no layers figure on the page"
    return json.loads(html.unescape(match.group(1)))


@pytest.mark.parametrize("kind", ["c", "c-caller", "onnx"])
def test_layers_chart_has_one_point_per_kernel_call(site: Any, runs: dict[str, Any],
                                                    kind: str) -> None:
    run = runs[kind]
    expected = profile_model(runs["path"], io="caller" if kind == "c-caller" else "arena")
    with httpx.Client(base_url=site.url, cookies={SESSION_COOKIE: runs["secret"]},
                      timeout=60) as client:
        page = client.get(f"/runs/{run.id}")
        body = client.get(f"/runs/{run.id}/body")
    for response in (page, body):
        assert response.status_code == 200, response.text[:2000]
        assert 'id="layers"' in response.text
        assert f'id="plot-layers" data-points="{len(expected)}"' in response.text
    assert '<script src="/static/vendor/plotly.min.js" defer></script>' in page.text
    figure = _figure(page.text)
    assert figure["id"] == "plot-layers"
    arena, macs = figure["data"]
    assert arena["x"] == macs["x"] == [0, 1, 2, 3]
    assert arena["y"] == [r.live_bytes / 1024 for r in expected]
    assert macs["y"] == [2304, 0, 4608, 1280] == [r.macs for r in expected]
    assert macs["yaxis"] == "y2" and "conv1, relu1" in arena["hovertext"][0]
    # The chart follows the step's options: with io=caller the input (256 B) and the
    # logits (40 B) are the caller's arrays, not arena bytes.
    live = [1024, 1280, 768, 512] if kind == "c-caller" else [1280, 1280, 768, 552]
    assert [r.live_bytes for r in expected] == live
    assert "(peak 1.2 KiB)" in page.text


def test_no_chart_without_a_compilable_model(site: Any, runs: dict[str, Any],
                                             tmp_path: Path) -> None:
    """A run of a model the compiler cannot lower has no Layers section, and its page
    still renders; another account cannot read a run's page at all."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["y"], name="sine")], "sine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(tmp_path / "sine.onnx"))
    accounts = site.studio.accounts
    found = accounts.store.find_user(EMAIL)
    assert found is not None
    ws = accounts.workspace(found[0])
    sine = ws.add_model(tmp_path / "sine.onnx", "sine")
    run = _finish(site, ws.create_run(Pipeline(name="sine", steps=["fuse"], evaluate=False),
                                      model=sine.id))
    with httpx.Client(base_url=site.url, cookies={SESSION_COOKIE: runs["secret"]},
                      timeout=60) as client:
        page = client.get(f"/runs/{run.id}")
    assert page.status_code == 200 and 'id="layers"' not in page.text
    assert "plotly.min.js" not in page.text
    assert accounts.register("other-layers@example.com", PASSWORD, "Other") is not None
    _token, other = accounts.login("other-layers@example.com", PASSWORD)
    with httpx.Client(base_url=site.url, cookies={SESSION_COOKIE: other},
                      timeout=60) as client:
        response = client.get(f"/runs/{runs['c'].id}")
    assert response.status_code == 404 and "layers-figure" not in response.text


def test_the_page_script_draws_the_chart(site: Any, runs: dict[str, Any],
                                         new_page: Any) -> None:
    """In a browser, under the page's CSP: four bars and four MACs markers."""
    page = new_page()
    page.context.add_cookies([{"name": SESSION_COOKIE, "value": runs["secret"],
                               "url": site.url}])
    page.goto(f"/runs/{runs['c'].id}")
    page.wait_for_function("() => document.body.dataset.layersReady === '1'")
    assert page.locator("#plot-layers .barlayer .point").count() == 4
    assert page.locator("#plot-layers .scatterlayer .point").count() == 4
    title = page.locator("#plot-layers .gtitle").text_content() or ""
    assert title.startswith("Layers: live arena and MACs")
