"""Every list endpoint pages with ``limit`` and an opaque, signed ``cursor`` (keyset
pagination): a walk visits each item exactly once, stays exact while items are added,
refuses changed cursors and out-of-range limits with a 422, and never shows another
user's items. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_support import API, FAST, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from tinymlaas.api.schemas import ProjectPublic
from tinymlaas.client import Client
from tinymlaas.service.pipelines import parse_pipeline
from tinymlaas.service.searches import SearchRequest


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.token}"}


def _walk(http: TestClient, client: Client, path: str, limit: int,
          between: object = None) -> list[list[dict]]:
    """Every page of ``path``, following the Link headers; ``between()`` runs after
    each page."""
    pages, url = [], f"{API}{path}{'&' if '?' in path else '?'}limit={limit}"
    while True:
        response = http.get(url, headers=_auth(client))
        assert response.status_code == 200, response.text
        pages.append(response.json())
        link = response.headers.get("link")
        if link is None:
            return pages
        assert len(pages[-1]) == limit  # only a full page says that more follow
        target, rel = link.split(";")
        assert rel.strip() == 'rel="next"' and target.startswith(f"<{API}")
        url = target.strip()[1:-1]
        if callable(between):
            between()


def _pending_runs(studio: Studio, email: str, model: str, dataset: str, count: int,
                  prefix: str) -> list[str]:
    """Runs recorded as pending (not executed): cheap items to page through."""
    user = studio.accounts.store.find_user(email)
    assert user is not None
    ws = studio.accounts.workspace(user[0])
    pipeline = parse_pipeline(FAST, "pipeline")
    return [ws.create_run(pipeline, model=model, dataset=dataset, name=f"{prefix}-{i}").id
            for i in range(count)]


def test_a_cursor_walk_visits_every_run_once_newest_first_even_while_runs_are_added(
        http: TestClient, studio: Studio, alice: Client, alice_model, alice_data) -> None:
    ids = _pending_runs(studio, "alice@example.com", alice_model.id, alice_data.id, 7, "a")
    pages = _walk(http, alice, "/runs", 3)
    assert [len(page) for page in pages] == [3, 3, 1]
    walked = [run["id"] for page in pages for run in page]
    assert sorted(walked) == sorted(ids) and len(set(walked)) == 7
    whole = http.get(f"{API}/runs?limit={MAX_LIMIT}", headers=_auth(alice))
    assert "link" not in whole.headers
    assert [r["id"] for r in whole.json()] == walked  # the same order, page by page
    stamps = [(r["created_at"], r["id"]) for r in whole.json()]
    assert stamps == sorted(stamps, reverse=True)  # newest first

    # Runs created during a walk come before its cursor: the walk still sees each of the
    # runs that were there exactly once, and nothing twice.
    added: list[str] = []
    pages = _walk(http, alice, "/runs", 2, between=lambda: added.extend(_pending_runs(
        studio, "alice@example.com", alice_model.id, alice_data.id, 2, f"b{len(added)}")))
    walked = [run["id"] for page in pages for run in page]
    assert len(added) == 6 and len(walked) == len(set(walked))
    assert set(ids) <= set(walked) and not set(walked) & set(added)

    # A filter narrows the walk; the cursor goes on under the same filter.
    pending = _walk(http, alice, "/runs?status=pending", 4)
    assert sum(map(len, pending)) == 13
    assert _walk(http, alice, "/runs?status=succeeded", 4) == [[]]


def test_out_of_range_limits_and_changed_cursors_are_422(http: TestClient,
                                                          alice: Client) -> None:
    for name in ("first", "second", "third"):
        alice.create_project(name)
    for bad in ("0", "-1", str(MAX_LIMIT + 1), "ten", "2.5"):
        response = http.get(f"{API}/projects?limit={bad}", headers=_auth(alice))
        assert response.status_code == 422, (bad, response.text)
        assert_error_shape(response.json(), "validation_error")
    assert len(http.get(f"{API}/projects?limit={MAX_LIMIT}", headers=_auth(alice)).json()) == 4

    first = http.get(f"{API}/projects?limit=1", headers=_auth(alice))
    cursor = httpx.URL(first.headers["link"].split(";")[0][1:-1]).params["cursor"]
    ok = http.get(f"{API}/projects", params={"limit": 1, "cursor": cursor},
                  headers=_auth(alice))
    assert ok.status_code == 200 and ok.json()[0]["name"] == "first"
    body, signature = cursor.split(".")
    flipped = "A" if body[5] != "A" else "B"
    changed = [body[:5] + flipped + body[6:] + "." + signature,  # another position
               body + "." + signature[::-1],  # another signature
               body, "not-a-cursor", "a.b.c", "%%%.@@@", cursor + "x", "." * 3]
    for bad in changed:
        response = http.get(f"{API}/projects", params={"limit": 1, "cursor": bad},
                            headers=_auth(alice))
        assert response.status_code == 422, (bad, response.text)
        assert_error_shape(response.json(), "validation_error")
        assert response.json()["details"]["errors"][0]["loc"] == ["query", "cursor"]
    # A cursor belongs to the list that gave it out.
    elsewhere = http.get(f"{API}/webhooks", params={"cursor": cursor}, headers=_auth(alice))
    assert elsewhere.status_code == 422 and "/api/v1/projects" in elsewhere.json()["message"]
    too_long = http.get(f"{API}/projects", params={"cursor": "a" * 2000},
                        headers=_auth(alice))
    assert too_long.status_code == 422


def test_pages_never_hold_another_users_items(http: TestClient, studio: Studio,
                                              alice: Client, bob: Client, alice_model,
                                              alice_data) -> None:
    mine = _pending_runs(studio, "alice@example.com", alice_model.id, alice_data.id, 3, "a")
    for i in range(3):
        alice.create_project(f"alice-{i}")
        bob.create_project(f"bob-{i}")
    bob_projects = {p.id for p in bob.list_projects()}
    alice_projects = {p.id for p in alice.list_projects()}
    assert len(bob_projects) == len(alice_projects) == 4
    assert not bob_projects & alice_projects
    walked = [p["id"] for page in _walk(http, bob, "/projects", 1) for p in page]
    assert set(walked) == bob_projects and len(walked) == 4
    # Alice's cursor in Bob's hands is only a position in Bob's own list.
    first = http.get(f"{API}/runs?limit=1", headers=_auth(alice))
    assert first.json()[0]["id"] in mine
    cursor = httpx.URL(first.headers["link"].split(";")[0][1:-1]).params["cursor"]
    stolen = http.get(f"{API}/runs", params={"cursor": cursor}, headers=_auth(bob))
    assert stolen.status_code == 200 and stolen.json() == []
    assert _walk(http, bob, "/runs", 1) == [[]]
    other = http.get(f"{API}/runs?project={next(iter(alice_projects))}", headers=_auth(bob))
    assert other.status_code == 404
    assert _walk(http, bob, "/models", 1) == [[]]
    assert _walk(http, bob, "/datasets", 1) == [[]]
    assert _walk(http, bob, "/webhooks", 1) == [[]]


def test_a_members_pages_hold_the_shared_projects_runs_until_it_is_unshared(
        http: TestClient, studio: Studio, alice: Client, bob: Client, alice_model,
        alice_data) -> None:
    shared = _pending_runs(studio, "alice@example.com", alice_model.id, alice_data.id, 3, "s")
    project = alice.get_run(shared[0]).project
    assert _walk(http, bob, "/runs", 2) == [[]]
    alice.share_project(project, "bob@example.com", role="viewer")
    for path in ("/runs", "/runs?status=pending"):
        pages = _walk(http, bob, path, 2)
        assert [len(page) for page in pages] == [2, 1]
        assert [r["id"] for page in pages for r in page] == shared[::-1]  # newest first
    assert _walk(http, bob, "/runs?status=succeeded", 2) == [[]]
    alice.unshare_project(project, bob.me().id)
    assert _walk(http, bob, "/runs", 2) == [[]]


def test_every_list_endpoint_pages_to_the_same_items(http: TestClient, studio: Studio,
                                                     alice: Client, bob: Client, alice_model,
                                                     alice_data, tiny_onnx: Path) -> None:
    alice.upload_model(tiny_onnx, name="second-model")
    alice.add_builtin_dataset("digits", name="digits-again")
    project = alice.create_project("shared")
    alice.share_project(project.id, "bob@example.com", "viewer")
    for i in range(2):
        alice.create_token(f"token-{i}")
        alice.create_webhook(f"http://127.0.0.1:9/hook-{i}")
    alice.create_template("mine", FAST)
    for name in ("kiosk-b", "kiosk-a"):
        alice.enroll_device(name, groups=["lab"])
    run = _pending_runs(studio, "alice@example.com", alice_model.id, alice_data.id, 2, "r")[0]
    user = studio.accounts.store.find_user("alice@example.com")
    assert user is not None
    for _ in range(2):  # recorded, never started
        studio.accounts.workspace(user[0]).create_search(
            SearchRequest(model=alice_model.id, dataset=alice_data.id))
    paths = ["/projects", "/models", "/datasets", "/runs", "/devices", "/transformers",
             "/templates", "/webhooks", "/users/me/tokens", f"/projects/{project.id}/members",
             f"/runs/{run}/logs", f"/runs/{run}/artifacts", "/searches", "/fleet/devices"]
    for path in paths:
        whole = http.get(f"{API}{path}?limit={MAX_LIMIT}", headers=_auth(alice))
        assert whole.status_code == 200 and "link" not in whole.headers, path
        expected = whole.json()
        assert expected, path
        pages = _walk(http, alice, path, 1)
        assert [item for page in pages for item in page] == expected, path
        assert len(pages) == len(expected), path  # no empty page at the end
    members = http.get(f"{API}/projects/{project.id}/members?limit=1", headers=_auth(alice))
    assert [m["role"] for m in members.json()] == ["owner"]  # the owner comes first
    every = http.get(f"{API}/transformers?limit={MAX_LIMIT}", headers=_auth(alice)).json()
    default = http.get(f"{API}/transformers", headers=_auth(alice)).json()
    assert default == every[:DEFAULT_LIMIT]  # without limit: the first DEFAULT_LIMIT


def test_the_sdk_follows_the_pages(alice: Client) -> None:
    for i in range(4):
        alice.create_project(f"p{i}")
    pages = list(alice.pages(ProjectPublic, "/projects", limit=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [p.id for page in pages for p in page] == [p.id for p in alice.list_projects()]
    assert [p.name for p in alice.list_projects()][1:] == ["p0", "p1", "p2", "p3"]


def test_the_openapi_spec_documents_the_paging(http: TestClient) -> None:
    spec = http.get(f"{API}/openapi.json").json()
    lists = [(path, op) for path, ops in spec["paths"].items()
             for method, op in ops.items() if method == "get" and
             op["responses"].get("200", {}).get("content", {}).get("application/json", {})
             .get("schema", {}).get("type") == "array"]
    assert len(lists) >= 13
    for path, op in lists:
        params = {p["name"]: p for p in op.get("parameters", [])}
        assert params["limit"]["schema"]["maximum"] == MAX_LIMIT, path
        assert params["limit"]["schema"]["minimum"] == 1, path
        assert params["cursor"]["schema"]["anyOf"][0]["maxLength"] > 0, path
        assert "Link" in op["responses"]["200"]["headers"], path
        assert "422" in op["responses"], path


@pytest.mark.parametrize("size", [1, 3])
def test_a_walk_of_projects_is_oldest_first(http: TestClient, alice: Client,
                                            size: int) -> None:
    for i in range(4):
        alice.create_project(f"n{i}")
    names = [p["name"] for page in _walk(http, alice, "/projects", size) for p in page]
    assert names[1:] == ["n0", "n1", "n2", "n3"] and len(names) == 5
