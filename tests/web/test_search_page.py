"""The search page in a real browser: the form from the dashboard, candidates and the Pareto
plot appearing while the search runs, the recommended run linking to its page; the form's
errors and another user's search over plain HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import RUN_TIMEOUT_MS, sign_in, text_of

from tinymlaas.api.testing import write_digits_onnx

pytestmark = pytest.mark.slow


def test_a_search_from_the_dashboard_shows_candidates_and_the_recommended_run(
        signed_in: Any, site: Any, tmp_path: Path) -> None:
    page = signed_in("sofia@example.com")
    project = page.url.rsplit("/", 1)[1]
    user = site.studio.accounts.store.find_user("sofia@example.com")[0]
    ws = site.studio.accounts.workspace(user)
    model = ws.add_model(write_digits_onnx(tmp_path / "logreg.onnx"), "logreg")
    ws.add_dataset("digits")

    page.goto(f"/projects/{project}")
    page.locator("#search-pipelines").click()
    page.wait_for_url(re.compile(rf"/projects/{project}/searches/new$"))
    assert page.get_by_text("No searches yet").is_visible()
    page.get_by_label("Model", exact=True).select_option(model.id)
    page.get_by_label("Dataset", exact=True).select_option(
        page.locator("#dataset option", has_text="digits").get_attribute("value"))
    page.get_by_label("Accuracy budget (points)").fill("2")
    page.get_by_label("Max trials").fill("2")
    page.get_by_label("Fine-tuning epochs").fill("1")
    page.get_by_role("button", name="Start search").click()
    page.wait_for_url(re.compile(r"/searches/search-[0-9a-f]+$"))
    search_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__samePage = 'yes'")

    # The page follows the search without reloading: candidates, then the outcome.
    page.wait_for_selector("#search-live[data-state=succeeded]", timeout=RUN_TIMEOUT_MS)
    assert page.evaluate("window.__samePage") == "yes", "the page reloaded"
    live = page.evaluate("window.tinymlaasSearch")
    assert live["polls"] > 0 and live["done"] and live["candidates"] == 2
    page.wait_for_selector("body[data-plots-ready='1']", timeout=60_000)
    assert page.locator("#search-plot .scatterlayer .point").count() >= 2
    assert page.locator("#search-plot .legendtext", has_text="Pareto front").count() == 1
    assert page.locator("#search-plot .legendtext", has_text="recommended").count() == 1
    rows = page.locator("#candidates-table tbody tr")
    assert rows.count() == 2
    search = site.studio.searches.get(search_id)
    assert [r.get_attribute("data-run") for r in rows.all()] == \
        [c.run_id for c in search.candidates]
    link = page.locator("#recommended-link")
    assert link.inner_text() == search.recommended
    assert page.locator("#search-state .badge").get_attribute("data-status") == "succeeded"
    assert page.locator("#cancel-search").is_hidden()
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    assert (tmp_path / "search.png").stat().st_size > 10_000

    link.click()
    page.wait_for_url(re.compile(rf"/runs/{search.recommended}$"))
    assert page.locator("#run-status").get_attribute("data-status") == "succeeded"
    page.goto(f"/projects/{project}/searches/new")
    assert page.locator("#searches-table tbody tr").count() == 1


def test_the_form_explains_bad_values_and_other_users_see_nothing(
        http: TestClient, tmp_path: Path) -> None:
    owner = sign_in(http, "olga@example.com")
    project = owner.me().default_project
    model = owner.upload_model(write_digits_onnx(tmp_path / "logreg.onnx"), name="logreg")
    data = owner.add_builtin_dataset("digits")
    form = http.get(f"/projects/{project}/searches/new")
    assert form.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    base = {"model": model.id, "dataset": data.id, "max_accuracy_drop": "1", "budget": "10m",
            "max_trials": "2", "epochs": "1", "csrf_token": token}
    for change, expected in (({"max_trials": "0"}, "max_trials"),
                             ({"max_trials": "500"}, "max_trials"),
                             ({"budget": "soon"}, "is not a duration"),
                             ({"max_accuracy_drop": "lots"}, "accuracy budget must be a "
                                                             "number"),
                             ({"objective": "speed"}, "objective"),
                             ({"model": ""}, "pick the model")):
        answer = http.post(f"/projects/{project}/searches", data={**base, **change},
                           follow_redirects=False)
        assert answer.status_code == 400, (change, answer.status_code)
        assert expected in text_of(answer.text), change
    assert owner.list_searches() == []

    # A queued search of the owner (not started): another user gets 404 everywhere.
    from tinymlaas.service.searches import SearchRequest

    studio = http.app.state.studio
    user = studio.accounts.store.find_user("olga@example.com")[0]
    queued = studio.accounts.workspace(user).create_search(
        SearchRequest(model=model.id, dataset=data.id, max_trials=1))
    assert http.get(f"/searches/{queued.id}").status_code == 200
    http.cookies.clear()
    sign_in(http, "mallory@example.com")
    for path in (f"/searches/{queued.id}", f"/searches/{queued.id}/body",
                 f"/projects/{project}/searches/new"):
        assert http.get(path).status_code == 404, path
    own = http.get("/projects")
    token = re.search(r'name="csrf_token" value="([^"]+)"', own.text).group(1)
    assert http.post(f"/searches/{queued.id}/cancel", data={"csrf_token": token},
                     follow_redirects=False).status_code == 404
    assert studio.searches.get(queued.id).state.value == "queued"
