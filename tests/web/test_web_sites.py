"""The sites page without a browser: a site made through the form shows its token once,
its workers' heartbeats appear, bad input is a clear 4xx, another user reaches nothing."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from web_support import csrf_of, shot, sign_in, text_of

from tinymlaas.client import Client


def test_sites_page_create_heartbeat_delete(http: TestClient) -> None:
    api = sign_in(http, "plant@example.com")
    empty = http.get("/sites")
    assert empty.status_code == 200 and "No sites yet" in text_of(empty.text)
    assert 'href="/sites"' in empty.text and 'id="site-form-heading"' in empty.text
    token = csrf_of(http, "/sites")

    def post(path: str, **form: str) -> Any:
        return http.post(path, data={"csrf_token": token, **form}, follow_redirects=False)

    assert http.post("/sites", data={"name": "x"}).status_code == 403, "no CSRF"
    created = post("/sites", name="factory")
    assert created.status_code == 201
    shown = re.search(r'id="site-token">(tmlsite_[A-Za-z0-9_-]+)<', created.text)
    assert shown, text_of(created.text)[:400]
    site_token = shown.group(1)
    page = http.get("/sites")
    assert "factory" in text_of(page.text) and "no worker yet" in text_of(page.text)
    assert site_token not in page.text, "the token is shown once"

    for form, status, words in (({"name": ""}, 400, "give the site a name"),
                                ({"name": "../x"}, 400, "must match"),
                                ({"name": "factory"}, 409, "already has a site"),
                                ({"name": "x" * 300}, 400, "invalid request")):
        answer = post("/sites", **form)
        assert answer.status_code == status, (form, answer.status_code)
        assert words in text_of(answer.text), (form, text_of(answer.text)[:400])
        assert "tmlsite_" not in answer.text

    Client(http=http, token=site_token).site_heartbeat("factory", "w-7", "plant-pc",
                                                       ["run-1/2"])
    page = text_of(http.get("/sites").text)
    assert "w-7" in page and "plant-pc" in page and "alive" in page and "run-1/2" in page

    site_id = api.get_site("factory").id
    deleted = post(f"/sites/{site_id}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/sites?deleted=factory"
    assert api.list_sites() == []
    assert post(f"/sites/{site_id}/delete").status_code == 404


def test_another_user_reaches_no_site(http: TestClient) -> None:
    owner = sign_in(http, "owner@example.com")
    owner.create_site("secret-site")
    site_id = owner.get_site("secret-site").id
    http.cookies.clear()
    sign_in(http, "mallory@example.com")
    page = http.get("/sites")
    assert "secret-site" not in page.text and site_id not in page.text
    token = csrf_of(http, "/sites")
    for ref in (site_id, "secret-site"):
        answer = http.post(f"/sites/{ref}/delete", data={"csrf_token": token},
                           follow_redirects=False)
        assert answer.status_code == 404
    foreign = http.post("/sites", data={"csrf_token": token, "name": "x",
                                        "project": owner.me().default_project},
                        follow_redirects=False)
    assert foreign.status_code == 404
    assert [s.name for s in owner.list_sites()] == ["secret-site"]


def test_sites_page_in_a_browser(site, signed_in) -> None:
    """Through the navigation and the form named by its heading, under the page's CSP."""
    page = signed_in("site-owner@example.com")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sites").click()
    page.wait_for_url(re.compile(r"/sites$"))
    assert page.get_by_role("heading", name="Sites and workers").is_visible()
    form = page.get_by_role("form", name="Create a site")
    form.get_by_label("Name").fill("factory")
    form.get_by_role("button", name="Create site").click()
    token = page.locator("#site-token").inner_text().strip()
    assert token.startswith("tmlsite_")
    shot(page, "sites-created")
    with Client(site.url, token) as worker:
        worker.site_heartbeat("factory", "w-1", "plant-pc", ["run-x/0"])
    page.goto("/sites")
    assert token not in page.content(), "the token is shown once only"
    row = page.locator("tr[data-site=factory]")
    assert "plant-pc" in row.inner_text() and "run-x/0" in row.inner_text()
    assert row.locator(".state").inner_text().strip() == "alive"
    page.get_by_role("button", name="Delete site factory").click()
    page.wait_for_url(re.compile(r"/sites\?deleted=factory"))
    assert "No sites yet" in page.content()
