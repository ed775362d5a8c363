"""The run page renders for every kind of output, over plain HTTP: a run that ends in
``compile-c`` (C sources, no ONNX metrics such as parameters) shows what the C output has
and a dash for the rest."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_support import PASSWORD

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline, RunStatus
from tinymlaas.web.render import fmt_bytes, fmt_num
from tinymlaas.web.session import SESSION_COOKIE

EMAIL = "ada-c@example.com"


@pytest.fixture(scope="module")
def c_run(site: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished ``compile-c`` run of the digits model, evaluated against a device."""
    accounts = site.studio.accounts
    user = accounts.register(EMAIL, PASSWORD, "Ada")
    assert user is not None
    ws = accounts.workspace(user)
    tmp = tmp_path_factory.mktemp("c-run")
    model = ws.add_model(write_digits_onnx(Path(tmp) / "logreg.onnx"), "logreg")
    dataset = ws.add_dataset("digits")
    run = ws.create_run(Pipeline(name="to-c", steps=["compile-c"]), model=model.id,
                        dataset=dataset.id, device="arduino-nano-33-ble-sense")
    site.studio.runs.submit_run(run)
    deadline = time.monotonic() + 300
    while site.studio.services.get_run(run.id).status not in {RunStatus.succeeded,
                                                             RunStatus.failed}:
        assert time.monotonic() < deadline, "the compile-c run did not finish"
        time.sleep(0.5)
    done = site.studio.services.get_run(run.id)
    assert done.status is RunStatus.succeeded, done.error
    _token, secret = accounts.login(EMAIL, PASSWORD)
    return {"run": done, "secret": secret}


def _rows(html: str, section_id: str) -> dict[str, list[str]]:
    """``{row heading: [first cell, second cell]}`` of the table in a section."""
    section = html.split(f'id="{section_id}"', 1)[1].split("</section>", 1)[0]
    rows = {}
    for name, cells in re.findall(r'<th scope="row">([^<]+)</th>(.*?)</tr>', section, re.S):
        values = re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)
        rows[name.strip()] = [re.sub(r"<[^>]+>", "", v).strip() for v in values[:2]]
    return rows


def test_compile_c_run_page_renders(site: Any, c_run: dict[str, Any]) -> None:
    run = c_run["run"]
    result, baseline = run.result, run.baseline
    # The baseline is the float32 input model compiled the same way (here: the output
    # itself), measured in the same runtime: generated C, no parameter count.
    assert result["runtime"] == baseline["runtime"] == "c"
    assert "parameters" not in result and "parameters" not in baseline
    assert result["weight_bytes"] > 0 and result["arena_bytes"] >= 0
    with httpx.Client(base_url=site.url, cookies={SESSION_COOKIE: c_run["secret"]},
                      timeout=60) as client:
        page = client.get(f"/runs/{run.id}")
        body = client.get(f"/runs/{run.id}/body")
    for response in (page, body):
        assert response.status_code == 200, response.text[:2000]
        assert "compile-c" in response.text
        assert run.output_sha in response.text
    rows = _rows(page.text, "metrics")
    # Generated C has no parameter count: a dash on both sides.
    assert rows["Parameters"] == ["–", "–"]
    assert rows["Accuracy"] == [fmt_num(baseline["accuracy"], 2, "%"),
                                fmt_num(result["accuracy"], 2, "%")]
    assert rows["MACs"] == [fmt_num(baseline["macs"], 0), fmt_num(result["macs"], 0)]
    assert rows["Weights (flash)"] == [fmt_bytes(baseline["weight_bytes"]),
                                       fmt_bytes(result["weight_bytes"])]
    assert rows["Arena (RAM)"] == [fmt_bytes(baseline["arena_bytes"]),
                                   fmt_bytes(result["arena_bytes"])]
    assert rows["Input and output buffers"] == [fmt_bytes(baseline["io_bytes"]),
                                                fmt_bytes(result["io_bytes"])]
    # host figures have their own section, which names the runtime
    host = _rows(page.text, "host")
    assert host["Runtime"] == ["generated C (host build)"] * 2
    assert host["Latency p50"] == [fmt_num(baseline["latency_ms_p50"], 3, " ms"),
                                   fmt_num(result["latency_ms_p50"], 3, " ms")]
    assert "Peak RAM (host process)" in host and "Latency p50" not in rows
    fit = result["fit"]
    assert fit["runtime"] == "c" and "<code>c</code> runtime" in page.text
    assert _rows(page.text, "fit")["Flash"] == [fmt_bytes(fit["flash_needed_bytes"]),
                             fmt_bytes(fit["flash_available_bytes"])]
    assert fit["verdict"] == "fits" and 'data-verdict="fits"' in page.text
