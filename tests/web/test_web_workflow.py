"""The whole Studio workflow in a real browser: register, upload a model, register the
digits dataset, start runs from templates and watch them finish live, compare them, download
the result, search for a better pipeline, delete a run. A screenshot at every step; no page
(nor anything a page loads) answers with a status >= 500 (the ``new_page`` fixture checks)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import onnx
import pytest
from web_support import RUN_TIMEOUT_MS, shot

pytestmark = pytest.mark.slow


def _start_run(page: Any, project: str, template: str, device: str | None = None) -> str:
    page.goto(f"/projects/{project}/runs/new")
    for label, text in (("Model", "digits-cnn"), ("Dataset", "digits")):
        select = page.get_by_label(label, exact=True)
        select.select_option(select.locator("option", has_text=text).first
                             .get_attribute("value"))
    if device:
        page.get_by_label("Target device").select_option(device)
    page.get_by_label("Template", exact=True).select_option(template)
    page.get_by_label("Run name (optional)").fill(template)
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/run-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


def _wait_live(page: Any) -> None:
    """Wait for the run to end on the page it was started from, without reloading it."""
    page.evaluate("window.__samePage = 'yes'")
    page.wait_for_selector("#run-status[data-status=succeeded]", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => window.tinymlaasLive && window.tinymlaasLive.ended",
                           timeout=60_000)
    assert page.evaluate("window.__samePage") == "yes", "the page reloaded"
    live = page.evaluate("window.tinymlaasLive")
    assert live["progress"] > 0, "no progress event reached the page"
    assert any(s.endswith(":succeeded") for s in live["seen"]), live["seen"]


def test_register_upload_run_compare_download(signed_in: Any, site: Any, digits_cnn: Any,
                                              screenshots: Path) -> None:
    page = signed_in("ada@example.com")
    project = page.url.rsplit("/", 1)[1]
    assert page.get_by_text("No runs yet").is_visible()
    shot(page, "01-dashboard-empty")

    # a model upload and the built-in dataset, through their forms
    page.goto("/models")
    assert page.get_by_text("No models yet").is_visible()
    # The page has two forms (upload, Hugging Face import), each named by its heading.
    upload = page.get_by_role("form", name="Upload a model")
    upload.get_by_label("File (.onnx, .pt2, TorchScript .pt)").set_input_files(str(digits_cnn[0]))
    upload.get_by_label("Name (optional)").fill("digits-cnn")
    upload.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/models\?added=model-"))
    row = page.locator("#models-table tbody tr.added")
    assert "digits-cnn" in row.inner_text() and "torch-exported" in row.inner_text()
    shot(page, "02-models")

    page.goto("/datasets")
    page.get_by_role("button", name=re.compile("Register digits")).click()
    page.wait_for_url(re.compile(r"/datasets\?added=data-"))
    assert "1,797" in page.locator("#datasets-table tbody tr.added").inner_text()
    shot(page, "03-datasets")

    page.goto(f"/projects/{project}/runs/new")
    shot(page, "04-new-run")

    # the first run, followed live
    first = _start_run(page, project, "static-int8", device="stm32f746-discovery")
    assert page.locator("#run-status").get_attribute("data-initial") in {"pending", "running"}
    shot(page, "05-run-live")
    _wait_live(page)
    for badge in page.locator("#steps-table .st .badge").all():
        assert badge.get_attribute("data-status") in {"succeeded", "cached"}
    assert page.locator("#fit-verdict").is_visible()
    assert "Accuracy" in page.locator("#metrics").inner_text()
    shot(page, "06-run-done")

    # the optimized model: the stored bytes, and a valid ONNX file
    with page.expect_download() as info:
        page.locator("#download-output").click()
    data = Path(info.value.path()).read_bytes()
    run = site.studio.services.get_run(first)
    stored = site.studio.services.artifact_path(run.output_sha).read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.output_sha == hashlib.sha256(
        stored).hexdigest()
    assert page.locator("#output-sha").inner_text() == run.output_sha
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)

    # a second run, then both compared
    second = _start_run(page, project, "fp16")
    _wait_live(page)
    page.goto(f"/projects/{project}")
    assert page.locator("#runs-table tbody tr").count() == 2
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#runs-table tbody tr").count() == 2
    shot(page, "07-dashboard")
    page.locator(f"#pick-{first}").check()
    page.locator(f"#pick-{second}").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r"/compare\?"))
    page.wait_for_selector("body[data-plots-ready='1']", timeout=60_000)
    for plot in ("plot-file-bytes", "plot-latency-ms", "plot-peak-memory-mb", "plot-bars"):
        assert page.locator(f"#{plot} svg.main-svg").count() > 0, plot
        assert page.locator(f"#{plot} .scatterlayer, #{plot} .barlayer").count() > 0, plot
    assert page.locator("#plot-file-bytes .legendtext", has_text="Pareto front").count() == 1
    assert page.locator("#compare-table tbody tr").count() == 2
    page.get_by_label("Metric", exact=True).select_option("size_ratio")
    page.wait_for_function(
        "() => document.querySelector('#plot-bars .gtitle').textContent.startsWith('Size')")
    shot(page, "08-compare")

    # a search from the dashboard, followed on its page until it ends
    page.goto(f"/projects/{project}")
    page.locator("#search-pipelines").click()
    page.wait_for_url(re.compile(rf"/projects/{project}/searches/new$"))
    for label, text in (("Model", "digits-cnn"), ("Dataset", "digits")):
        select = page.get_by_label(label, exact=True)
        select.select_option(select.locator("option", has_text=text).first
                             .get_attribute("value"))
    page.get_by_label("Accuracy budget (points)").fill("2")
    page.get_by_label("Max trials").fill("1")
    page.get_by_label("Fine-tuning epochs").fill("1")
    page.get_by_role("button", name="Start search").click()
    page.wait_for_url(re.compile(r"/searches/search-[0-9a-f]+$"))
    search_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#search-live[data-state=succeeded], #search-live[data-state=failed]",
                           timeout=RUN_TIMEOUT_MS)
    search = site.studio.searches.get(search_id)
    assert search.state.value == "succeeded", search
    assert page.locator("#candidates-table tbody tr").count() == len(search.candidates) == 1
    shot(page, "09-search")

    # deleting the second run: a confirmation page first, then it is gone, the first stays
    page.goto(f"/runs/{second}")
    page.locator("#delete-run").click()
    page.wait_for_url(re.compile(rf"/runs/{second}/delete$"))
    assert "This cannot be undone" in page.locator("#confirm-delete").inner_text()
    shot(page, "10-confirm-delete")
    page.locator("#delete-confirm").click()
    page.wait_for_url(re.compile(rf"/projects/{project}\?deleted=run$"))
    # the first run stays, and so do the search's candidate runs and the held-out
    # evaluation of its recommended candidate
    held_out = [c.test["run_id"] for c in search.candidates if c.test]
    assert len(held_out) == 1
    assert page.locator("#runs-table tbody tr").count() == 1 + len(search.candidates) + 1
    assert page.locator(f"#pick-{held_out[0]}").count() == 1
    assert page.locator(f"#pick-{first}").count() == 1
    shot(page, "11-after-delete")
    assert page.request.get(f"/runs/{second}").status == 404
    assert site.studio.services.artifacts.exists(run.output_sha)  # the first run's output
