"""A project's firmware signing key over the API: its public half for every member, rotation
for the owner only, nothing for strangers, and never the private key."""

from __future__ import annotations

from api_support import API, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client


def test_members_read_the_public_key_and_only_the_owner_rotates_it(
        http: TestClient, alice: Client, bob: Client, settings) -> None:
    project = alice.me().default_project
    first = alice.signing_key(project)
    assert first.project == project and len(first.fingerprint) == 64 and first.retired == []
    assert first.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert alice.signing_key(project).fingerprint == first.fingerprint  # made once

    # a stranger gets the 404 of something that does not exist
    for method, path in (("GET", "signing-key"), ("POST", "signing-key/rotate")):
        response = http.request(method, f"{API}/projects/{project}/{path}",
                                headers={"Authorization": f"Bearer {bob.token}"})
        assert response.status_code == 404, response.text
        assert_error_shape(response.json())

    # an editor reads it but cannot rotate it
    alice.share_project(project, "bob@example.com", "editor")
    assert bob.signing_key(project).fingerprint == first.fingerprint
    denied = http.post(f"{API}/projects/{project}/signing-key/rotate",
                       headers={"Authorization": f"Bearer {bob.token}"})
    assert denied.status_code == 403 and "owner" in denied.json()["message"]

    rotated = alice.rotate_signing_key(project)
    assert rotated.fingerprint != first.fingerprint and rotated.retired == [first.fingerprint]
    assert bob.signing_key(project).fingerprint == rotated.fingerprint

    # the private keys stay in the server's key directory, readable by it alone
    key_dir = settings.home / "keys" / project
    assert key_dir.stat().st_mode & 0o777 == 0o700
    secrets = [p for p in key_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert len(secrets) == 2
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)
    assert "PRIVATE" not in rotated.public_key_pem
