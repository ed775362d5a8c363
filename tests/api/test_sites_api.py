"""Sites through the API: tokens shown once and stored as sha256, project roles, another
user's sites invisible, site tokens good for the site endpoints only, heartbeats."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from api_support import API, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.client import Client
from tinymlaas.errors import ForbiddenError, NotFoundError


def _site_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_site_token_is_returned_once_and_stored_as_its_sha256(
        alice: Client, studio: Studio) -> None:
    created = alice.create_site("factory")
    assert created.name == "factory" and created.token.startswith("tmlsite_")
    assert len(created.token) > 40
    with studio.services.meta.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM sites WHERE name = 'factory'")
                              ).scalar_one()
    assert stored == hashlib.sha256(created.token.encode()).hexdigest()
    site = alice.get_site("factory")
    assert "token" not in site.model_dump() and site.workers == []
    assert [s.name for s in alice.list_sites()] == ["factory"]


def test_heartbeats_upsert_one_row_per_worker(alice: Client, http: TestClient) -> None:
    token = alice.create_site("factory").token
    worker = Client(http=http, token=token)
    first = worker.site_heartbeat("factory", "w1", "host-a", [])
    worker.site_heartbeat("factory", "w2", "host-b", ["run-1/0"])
    again = worker.site_heartbeat("factory", "w1", "host-a2", ["run-2/1", "run-2/2"])
    assert again.last_heartbeat >= first.last_heartbeat
    site = alice.get_site("factory")
    by_id = {w.id: w for w in site.workers}
    assert set(by_id) == {"w1", "w2"}
    assert by_id["w1"].hostname == "host-a2"
    assert by_id["w1"].running_steps == ["run-2/1", "run-2/2"]
    assert by_id["w2"].running_steps == ["run-1/0"]
    assert site.workers[0].id == "w1"  # newest heartbeat first
    assert abs((datetime.now(UTC) - by_id["w1"].last_heartbeat).total_seconds()) < 3600


def test_a_site_token_does_not_open_the_user_api(alice: Client, http: TestClient) -> None:
    token = alice.create_site("factory").token
    for method, path in [("GET", "/runs"), ("GET", "/sites"), ("GET", "/sites/factory"),
                         ("DELETE", "/sites/factory"), ("GET", "/models"),
                         ("POST", "/sites")]:
        response = http.request(method, API + path, headers=_site_headers(token),
                                json={"name": "x"} if method == "POST" else None)
        assert response.status_code in (401, 403), (method, path, response.status_code)
        assert_error_shape(response.json())
    assert [s.name for s in alice.list_sites()] == ["factory"]  # not deleted


def test_site_endpoints_refuse_user_tokens_and_other_sites_tokens(
        alice: Client, http: TestClient) -> None:
    alice.create_site("factory")
    other = alice.create_site("lab").token
    body = {"worker_id": "w1", "hostname": "h"}
    as_user = http.post(f"{API}/sites/factory/heartbeat", json=body,
                        headers=alice._headers())
    assert as_user.status_code == 401
    assert_error_shape(as_user.json())
    nobody = http.post(f"{API}/sites/factory/heartbeat", json=body)
    assert nobody.status_code == 401
    crossed = http.post(f"{API}/sites/factory/heartbeat", json=body,
                        headers=_site_headers(other))
    assert crossed.status_code == 404
    assert alice.get_site("factory").workers == []


def test_another_projects_user_cannot_see_or_delete_a_site(alice: Client, bob: Client,
                                                          http: TestClient) -> None:
    token = alice.create_site("factory").token
    for call in (lambda: bob.get_site("factory"), lambda: bob.delete_site("factory")):
        with pytest.raises(NotFoundError):
            call()
    assert bob.list_sites() == []
    site_id = alice.get_site("factory").id
    with pytest.raises(NotFoundError):
        bob.get_site(site_id)
    assert http.get(f"{API}/sites/{site_id}", headers=bob._headers()).status_code == 404
    bob.create_site("factory")  # the same name in bob's own project is fine
    assert [s.name for s in alice.list_sites()] == ["factory"]
    Client(http=http, token=token).site_heartbeat("factory", "w1", "h")
    assert [w.id for w in alice.get_site("factory").workers] == ["w1"]
    assert bob.get_site("factory").workers == []


def test_members_roles_apply_to_sites(alice: Client, bob: Client) -> None:
    project = alice.create_project("plant")
    alice.share_project(project.id, "bob@example.com", role="viewer")
    alice.create_site("line-1", project=project.id)
    assert [s.name for s in bob.list_sites(project=project.id)] == ["line-1"]
    with pytest.raises(ForbiddenError):
        bob.create_site("line-2", project=project.id)
    with pytest.raises(ForbiddenError):
        bob.delete_site("line-1", project=project.id)
    alice.share_project(project.id, "bob@example.com", role="editor")
    bob.create_site("line-2", project=project.id)
    bob.delete_site("line-1", project=project.id)
    assert [s.name for s in alice.list_sites(project=project.id)] == ["line-2"]


def test_deleting_a_site_revokes_its_token(alice: Client, http: TestClient) -> None:
    token = alice.create_site("factory").token
    worker = Client(http=http, token=token)
    worker.site_heartbeat("factory", "w1", "h")
    alice.delete_site("factory")
    response = http.post(f"{API}/sites/factory/heartbeat",
                         json={"worker_id": "w1", "hostname": "h"},
                         headers=_site_headers(token))
    assert response.status_code == 401
    with pytest.raises(NotFoundError):
        alice.get_site("factory")


@pytest.mark.parametrize("body", [
    {"worker_id": "../etc", "hostname": "h"},
    {"worker_id": "w", "hostname": ""},
    {"worker_id": "w", "hostname": "h", "running_steps": ["a b"]},
    {"worker_id": "w", "hostname": "h", "running_steps": ["s"] * 300},
    {"worker_id": "w", "hostname": "h", "extra": 1},
])
def test_bad_heartbeats_are_refused(alice: Client, http: TestClient, body: dict) -> None:
    token = alice.create_site("factory").token
    response = http.post(f"{API}/sites/factory/heartbeat", json=body,
                         headers=_site_headers(token))
    assert response.status_code in (400, 422), response.text
    assert_error_shape(response.json())
    assert alice.get_site("factory").workers == []


@pytest.mark.parametrize("name", ["", "-x", "a" * 101, "bad name", "x/y"])
def test_bad_site_names_are_refused(alice: Client, http: TestClient, name: str) -> None:
    response = http.post(f"{API}/sites", json={"name": name}, headers=alice._headers())
    assert response.status_code == 422, response.text
    assert_error_shape(response.json())


def test_a_duplicate_site_name_is_a_conflict(alice: Client, http: TestClient) -> None:
    alice.create_site("factory")
    response = http.post(f"{API}/sites", json={"name": "factory"}, headers=alice._headers())
    assert response.status_code == 409
    assert_error_shape(response.json())


def test_site_lists_are_paged(alice: Client, http: TestClient) -> None:
    for i in range(5):
        alice.create_site(f"s{i}")
    first = http.get(f"{API}/sites", params={"limit": 2}, headers=alice._headers())
    assert [s["name"] for s in first.json()] == ["s0", "s1"]
    assert 'rel="next"' in first.headers["link"]
    assert [s.name for s in alice.list_sites()] == [f"s{i}" for i in range(5)]
