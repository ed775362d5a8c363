"""The compare page in a browser, over runs in two runtimes with a device: host and device
in separate tables, "unsupported ops: ..." for the runs the C compiler cannot build, no
ratio across runtimes, accuracy axes fitted to the data, and no text on any plot that
overlaps other text (measured on the rendered SVG)."""

from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path
from typing import Any

from web_support import PASSWORD, log_in, shot

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline, RunStatus

EMAIL = "runtimes@example.com"
NANO = "arduino-nano-33-ble-sense"
PIPELINES = {
    "fused": ["fuse"],
    "static": ["fuse", {"quantize-static": {"num_samples": 64}}],
    "dynamic-int8": ["fuse", "quantize-dynamic"],
    "fp16": ["fuse", "fp16"],
    "static-c": ["fuse", {"quantize-static": {"num_samples": 64}},
                 {"compile-c": {"verify_samples": 8}}],
}
PLOTS = ("plot-file-bytes", "plot-latency-ms", "plot-peak-memory-mb", "plot-device-ram",
         "plot-bars")
#: Every visible text element of a plot with its box on the page.
TEXT_BOXES = """(id) => Array.from(document.querySelectorAll(`#${id} svg.main-svg text`))
  .map((t) => ({text: t.textContent.trim(), cls: t.getAttribute("class") || "",
                box: t.getBoundingClientRect()}))
  .filter((t) => t.text && t.box.width > 0 && t.box.height > 0)
  .map((t) => ({text: t.text, cls: t.cls, left: t.box.left, top: t.box.top,
                right: t.box.right, bottom: t.box.bottom}))"""


def _overlap(a: dict[str, Any], b: dict[str, Any], slack: float = 1.0) -> bool:
    return (min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack
            and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack)


def _runs(site: Any, tmp: Path) -> dict[str, Any]:
    accounts = site.studio.accounts
    user = accounts.register(EMAIL, PASSWORD, "Runtimes")
    assert user is not None
    ws = accounts.workspace(user)
    model = ws.add_model(write_digits_onnx(tmp / "logreg.onnx"), "logreg")
    dataset = ws.add_dataset("digits")
    runs = {}
    for name, steps in PIPELINES.items():
        run = ws.create_run(Pipeline.model_validate({"name": name, "steps": steps}),
                            model=model.id, dataset=dataset.id, device=NANO)
        site.studio.runs.submit_run(run)
        runs[name] = run.id
    deadline = time.monotonic() + 600
    while any(site.studio.services.get_run(r).status not in
              {RunStatus.succeeded, RunStatus.failed} for r in runs.values()):
        assert time.monotonic() < deadline, "the runs did not finish"
        time.sleep(0.5)
    for name, run_id in runs.items():
        done = site.studio.services.get_run(run_id)
        assert done.status is RunStatus.succeeded, (name, done.error)
    return {"project": user.default_project, "runs": runs}


def test_compare_page_separates_runtimes_and_labels_never_overlap(
        new_page: Any, site: Any, tmp_path: Path) -> None:
    data = _runs(site, tmp_path)
    runs = data["runs"]
    page = new_page(width=1366, height=900)
    log_in(page, EMAIL)
    query = "&".join(f"run={r}" for r in runs.values())
    response = page.goto(f"/projects/{data['project']}/compare?{query}")
    assert response is not None and response.status < 500 and response.status == 200
    page.wait_for_selector("body[data-plots-ready='1']", timeout=60_000)

    # host: each run in its runtime, ratios only within it
    host = {row.get_attribute("data-run"): row for row in
            page.locator("#compare-host tbody tr").all()}
    compiled = host[runs["static-c"]]
    assert compiled.get_attribute("data-runtime") == "c"
    assert "generated C (host build)" in compiled.locator(".runtime").inner_text()
    assert compiled.locator("td").nth(6).inner_text() == "generated C (host build)"
    assert host[runs["static"]].get_attribute("data-runtime") == "onnxruntime"
    # device: a verdict per run; the C compiler lacks the fp16 and dynamic int8 operators
    device = {row.get_attribute("data-run"): row.locator(".verdict").inner_text()
              for row in page.locator("#compare-device tbody tr").all()}
    assert device[runs["static"]] == device[runs["static-c"]] == "fits"
    assert device[runs["fp16"]].startswith("unsupported ops: ") and \
        "Cast" in device[runs["fp16"]]
    assert "MatMulInteger" in device[runs["dynamic-int8"]]
    assert "does not fit" not in " ".join(device.values())

    # accuracy axes fitted to the data, not from 0
    for plot in PLOTS[:4]:
        low, high = page.evaluate(f"document.getElementById('{plot}').layout.yaxis.range")
        assert 80 < low < high < 101, (plot, low, high)
    # the device plot draws the device's RAM, the host plots never do
    assert page.locator("#plot-device-ram .annotation-text",
                        has_text="RAM 256 KiB").count() == 1
    assert page.locator("#plot-peak-memory-mb .annotation-text").count() == 0
    line, label = page.evaluate("""() => [
      document.querySelector('#plot-device-ram .shapelayer path').getBoundingClientRect(),
      document.querySelector('#plot-device-ram .annotation').getBoundingClientRect()]""")
    assert abs(line["left"] - label["right"]) < 12, (line, label)  # the label at its line

    for metric, title in (("accuracy", "Accuracy"), ("latency_ratio", "Host speed-up")):
        page.get_by_label("Metric", exact=True).select_option(metric)
        page.wait_for_function("(title) => document.querySelector('#plot-bars .gtitle')"
                               ".textContent.startsWith(title)", arg=title)
        for plot in PLOTS:
            boxes = page.evaluate(TEXT_BOXES, plot)
            assert len(boxes) >= 5, (plot, boxes)  # titles, ticks, legend entries
            assert page.locator(f"#{plot} .textpoint").count() == 0, plot
            clashes = [(a["text"], b["text"]) for a, b in combinations(boxes, 2)
                       if _overlap(a, b)]
            assert not clashes, (plot, metric, clashes)
    legend = page.evaluate("Array.from(document.querySelectorAll("
                           "'#plot-latency-ms .legendtext')).map((t) => t.textContent)")
    assert "static-c · generated C (host build)" in legend
    assert "Pareto front · ONNX Runtime" in legend
    assert {"float32 baseline · ONNX Runtime",
            "float32 baseline · generated C (host build)"} <= set(legend)
    page.screenshot(path=str(tmp_path / "compare-runtimes.png"), full_page=True)
    assert (tmp_path / "compare-runtimes.png").stat().st_size > 10_000
    shot(page, "09-compare-runtimes")
