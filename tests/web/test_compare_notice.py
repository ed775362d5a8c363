"""Plain HTTP against the web pages (no browser): the compare page warns when runs start
from different models, and sizes read in binary units (KiB, MiB), never "KB" or "MB"."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi.testclient import TestClient
from web_support import sign_in, text_of

from helpers import other_digits_onnx
from tinymlaas.api.testing import write_digits_onnx

FUSE = {"steps": ["fuse"]}  # evaluated: the rows have sizes
DECIMAL_UNITS = re.compile(r"\b(KB|MB|kB)\b")


def test_compare_page_warns_about_different_models(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "ada@example.com")
    first = api.upload_model(write_digits_onnx(tmp_path / "a.onnx"), name="first")
    other = api.upload_model(other_digits_onnx(tmp_path / "b.onnx"), name="other")
    dataset = api.add_builtin_dataset("digits").id
    runs = [api.create_run(model, dataset, pipeline=FUSE, name=name).id
            for model, name in ((first.id, "fused"), (first.id, "fused-too"),
                                (other.id, "unrelated"))]
    for run in runs:
        assert api.follow(run).status == "succeeded"
    project = api.me().default_project

    same = http.get(f"/projects/{project}/compare?run={runs[0]}&run={runs[1]}")
    assert same.status_code == 200 and 'id="compare-table"' in same.text
    assert "compare-warning" not in same.text and "different models" not in same.text
    assert "KiB" in text_of(same.text) and not DECIMAL_UNITS.search(same.text)

    mixed = http.get(f"/projects/{project}/compare?run={runs[0]}&run={runs[2]}")
    assert mixed.status_code == 200
    notice = re.search(r'<div class="alert warning" role="status" id="compare-warning-1">'
                       r"(.*?)</div>", mixed.text, flags=re.S)
    assert notice, mixed.text[:2000]
    warning = html.unescape(notice.group(1))
    assert "different models" in warning and "not comparable" in warning
    assert f"first ({first.id})" in warning and f"other ({other.id})" in warning
    assert mixed.text.index("compare-warning-1") < mixed.text.index('id="compare-table"')


def test_device_pages_show_binary_units(http: TestClient) -> None:
    sign_in(http, "grace@example.com")
    page = http.get("/devices")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "256 KiB" in text and "1 MiB" in text and "RAM (KiB)" in text
    assert not DECIMAL_UNITS.search(text), DECIMAL_UNITS.findall(text)
