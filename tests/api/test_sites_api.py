"""Sites through the API: tokens shown once and stored as sha256, project roles, another
user's sites invisible, site tokens good for the site endpoints only, heartbeats."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from api_support import API, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.client import Client
from tinymlaas.errors import ForbiddenError, NotFoundError
from tinymlaas.store.attempts import AttemptStore


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


def _blob_url(http: TestClient, token: str, site: str, sha: str, job_id: str,
              attempt: int = 1, worker_id: str = "w1", **extra: object) -> httpx.Response:
    return http.post(f"{API}/sites/{site}/blob-urls", headers=_site_headers(token),
                     json={"sha256": sha, "job_id": job_id, "attempt": attempt,
                           "worker_id": worker_id, **extra})


def _put(http: TestClient, url: str, body: bytes) -> httpx.Response:
    path = "/" + url.split("://", 1)[-1].split("/", 1)[1]
    return http.put(path, content=body, headers={"Content-Type": "application/octet-stream"})


def test_an_upload_url_is_only_for_the_one_output_of_an_attempt_the_worker_holds(
        alice: Client, http: TestClient, studio: Studio) -> None:
    """A site's token cannot fill the server's disk: no PUT URL without a job its worker
    holds, none for another site's job or an ended one, one output per attempt."""
    factory = alice.create_site("factory")
    lab = alice.create_site("lab")
    attempts = AttemptStore(studio.services.meta)
    for job_id, site in (("run-a-0-abc", factory), ("run-a-1-abc", factory),
                         ("run-b-0-abc", lab)):
        attempts.queue(job_id, job_id[:5], site.id, site.project, {"job_id": job_id}, 3)
    output, other = b"the step's output", b"a blob of the site's choosing"
    sha, other_sha = (hashlib.sha256(b).hexdigest() for b in (output, other))

    def refused(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert_error_shape(response.json())
        assert words in response.json()["message"], response.json()

    # No job, a job nobody holds yet, another site's job (through either token).
    refused(_blob_url(http, factory.token, "factory", other_sha, "run-z-0-abc"), 404,
            "not found")
    refused(_blob_url(http, factory.token, "factory", other_sha, "run-a-0-abc"), 409,
            "no longer this worker's")
    assert attempts.claim("run-b-0-abc", lab.id, "w1", 60) is not None
    refused(_blob_url(http, factory.token, "factory", other_sha, "run-b-0-abc"), 404,
            "not found")
    refused(_blob_url(http, factory.token, "lab", other_sha, "run-b-0-abc"), 404,
            "not found")
    # The held attempt, but asked by another worker or for another attempt.
    assert attempts.claim("run-a-0-abc", factory.id, "w1", 60) is not None
    refused(_blob_url(http, factory.token, "factory", sha, "run-a-0-abc", worker_id="w2"),
            409, "no longer this worker's")
    refused(_blob_url(http, factory.token, "factory", sha, "run-a-0-abc", attempt=2),
            409, "no longer this worker's")
    # GET URLs come only with a claim (for the job's inputs).
    assert _blob_url(http, factory.token, "factory", sha, "run-a-0-abc",
                     method="GET").status_code == 422
    # The holder gets its output's URL, again on a retry; a second output is refused.
    first = _blob_url(http, factory.token, "factory", sha, "run-a-0-abc")
    assert first.status_code == 200, first.text
    assert _put(http, first.json()["url"], output).status_code == 201
    assert _blob_url(http, factory.token, "factory", sha, "run-a-0-abc").status_code == 200
    refused(_blob_url(http, factory.token, "factory", other_sha, "run-a-0-abc"), 409,
            "an attempt has one output")
    assert not studio.services.artifacts.exists(other_sha)
    # A result can name only the attempt's own output (stored already, here by another
    # attempt of the site: the other job's worker cannot pass it off as its own).
    assert attempts.claim("run-a-1-abc", factory.id, "w1", 60) is not None
    result = {"worker_id": "w1", "attempt": 1, "result": {
        "job_id": "run-a-1-abc", "ok": True, "output": {"sha256": sha, "kind": "file"}}}
    refused(http.post(f"{API}/sites/factory/jobs/run-a-1-abc/result", json=result,
                      headers=_site_headers(factory.token)), 400, "was not uploaded")
    # A finished job's attempt gets no URL.
    result["result"]["job_id"] = "run-a-0-abc"  # type: ignore[index]
    done = http.post(f"{API}/sites/factory/jobs/run-a-0-abc/result", json=result,
                     headers=_site_headers(factory.token))
    assert done.status_code == 200, done.text
    refused(_blob_url(http, factory.token, "factory", other_sha, "run-a-0-abc"), 409,
            "no longer this worker's")
    refused(_blob_url(http, factory.token, "factory", sha, "run-a-0-abc"), 409,
            "no longer this worker's")
    assert not studio.services.artifacts.exists(other_sha)
