"""The datasets page's "Data at a site" form.

- In a browser against a real ``tinymlaas serve`` with RabbitMQ and a real site worker: a
  file in the site's data root registered through the form shows as ``site://factory/...``
  with its samples and classes (described by the worker); a path that leaves the data root
  and a missing file show their messages in the page's error box, and the page still works.
- Without a browser, on a server without a broker: the form answers 409 with the reason,
  and the built-in form takes built-in names only (never a path on the server).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from web_support import csrf_of, log_in, shot, sign_in, text_of, watch_csp, watch_server_errors

from sites_harness import PASSWORD, RABBITMQ, Studio, running_studio
from tinymlaas.formats.datasets import load_builtin


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A server with a broker and a live worker of site ``factory`` (data root
    ``studio.root / "data"``)."""
    with running_studio(tmp_path_factory.mktemp("web-site-data"), RABBITMQ, 5672,
                        "RabbitMQ") as studio:
        site = studio.client.create_site("factory")
        studio.start_worker("factory", site.token, log_name="factory")
        yield studio


def _write_npz(path: Path, samples: int) -> str:
    """Part of the digits as an NPZ at ``path``; returns its sha256."""
    digits = load_builtin("digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=digits.X[:samples], y=digits.y[:samples])
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def owner_page(browser: Any, studio: Studio) -> Iterator[Any]:
    """The Studio's user, logged in through the form, watched for CSP violations and
    server errors like every page of the web tests."""
    context = browser.new_context(base_url=studio.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    violations, failures = watch_csp(page), watch_server_errors(page)
    log_in(page, "owner@example.com", PASSWORD)
    yield page
    context.close()
    assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)
    assert not failures, "server errors (status >= 500):\n" + "\n".join(failures)


def _register(page: Any, source: str, name: str = "", task: str = "") -> Any:
    form = page.get_by_role("form", name="Data at a site")
    form.get_by_label("File at the site").fill(source)
    form.get_by_label("Name (optional)").fill(name)
    if task:
        form.get_by_label("Task").select_option(task)
    with page.expect_navigation():
        form.get_by_role("button", name="Register data at the site").click()
    return form


def test_data_at_a_site_registered_through_the_form(studio: Studio, owner_page: Any) -> None:
    page = owner_page
    page.goto("/datasets")
    form = page.get_by_role("form", name="Data at a site")
    assert "site://factory/" in form.inner_text(), "the hint lists the user's sites"
    builtin = page.locator(f"#dataset-{studio.dataset.id} td.location")
    assert builtin.inner_text().strip() == "platform"

    source_sha = _write_npz(studio.root / "data" / "plant" / "line-3.npz", samples=1200)
    _register(page, "site://factory/plant/line-3.npz", name="line-3", task="classification")
    page.wait_for_url(re.compile(r"/datasets\?added=data-[0-9a-f]+$"))
    row = page.locator("#datasets-table tbody tr.added")
    assert row.locator("td.location").inner_text().strip() == "site://factory/plant/line-3.npz"
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[0] == "line-3" and cells[1] == "npz" and cells[3] == "classification"
    assert cells[4] == "1,200" and cells[6] == "10", cells
    shot(page, "site-data-registered")

    dataset = studio.client.get_dataset("line-3")
    assert dataset.location == "site://factory/plant/line-3.npz"
    assert dataset.site is not None and dataset.site.source_sha256 == source_sha
    assert f"dataset-{dataset.id}" == row.get_attribute("id")


def test_bad_paths_show_their_message_and_the_page_still_works(
        studio: Studio, owner_page: Any) -> None:
    page = owner_page
    page.goto("/datasets")
    rows = page.locator("#datasets-table tbody tr").count()

    for source, status, words in (
            ("site://factory/../etc/passwd", 400, "not a plain relative path"),
            ("site://factory/nothing-here.npz", 404, "no file 'nothing-here.npz'"),
            ("site://elsewhere/data.npz", 404, "elsewhere")):
        form = page.get_by_role("form", name="Data at a site")
        form.get_by_label("File at the site").fill(source)
        with page.expect_navigation() as answer:
            form.get_by_role("button", name="Register data at the site").click()
        assert answer.value.status == status, source
        page.wait_for_function(
            "words => (document.querySelector('#form-error') || {}).textContent?.includes(words)",
            arg=words)
        # The page is the datasets page again, with what was typed kept in the form.
        assert page.locator("#datasets-table tbody tr").count() == rows
        assert page.get_by_label("File at the site").input_value() == source
    shot(page, "site-data-error")

    # Corrected in the same form, it registers.
    _write_npz(studio.root / "data" / "fixed.npz", samples=300)
    _register(page, "site://factory/fixed.npz")
    page.wait_for_url(re.compile(r"/datasets\?added=data-[0-9a-f]+$"))
    row = page.locator("#datasets-table tbody tr.added")
    assert "site://factory/fixed.npz" in row.inner_text() and "300" in row.inner_text()
    assert page.locator("#form-error").count() == 0
    assert page.locator("#datasets-table tbody tr").count() == rows + 1


def test_site_form_without_a_broker_and_builtin_names_only(http: TestClient) -> None:
    api = sign_in(http, "no-broker@example.com")
    api.create_site("factory")
    token = csrf_of(http, "/datasets")
    page = http.get("/datasets")
    assert 'action="/datasets/site"' in page.text and "site://factory/" in page.text

    def post(path: str, **form: str) -> Any:
        return http.post(path, data={"csrf_token": token, **form}, follow_redirects=False)

    assert http.post("/datasets/site", data={"source": "site://factory/a.npz"},
                     follow_redirects=False).status_code == 403, "no CSRF"
    for form, status, words in (
            ({"source": "site://factory/a.npz"}, 409, "no broker"),
            ({"source": "/etc/passwd"}, 400, "site://NAME/relative/path"),
            ({"source": "site://factory/a.npz", "name": "../x"}, 400, "name '../x'"),
            ({"source": "site://factory/" + "a" * 800}, 400, "invalid request")):
        answer = post("/datasets/site", **form)
        assert answer.status_code == status, (form, answer.status_code)
        assert words in text_of(answer.text), (form, text_of(answer.text)[:500])

    # The built-in form registers built-ins only: a path on the server is refused.
    refused = post("/datasets/builtin", source=str(Path(__file__)))
    assert refused.status_code == 400 and "not a built-in dataset" in text_of(refused.text)
    added = post("/datasets/builtin", source="digits")
    assert added.status_code == 303 and added.headers["location"].startswith("/datasets?added=")
    assert [d.name for d in api.list_datasets()] == ["digits"]
