"""Registration, log-in, tokens, password and token storage, log-in rate limit."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from api_support import API, PASSWORD, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client
from tinymlaas.errors import AuthenticationError, ConflictError
from tinymlaas.store.accounts import TokenRow, UserRow


def test_register_login_and_me(http: TestClient, alice: Client) -> None:
    me = alice.me()
    assert me.email == "alice@example.com"
    projects = alice.list_projects()
    assert [p.id for p in projects] == [me.default_project]
    assert projects[0].owner == me.id


def test_registration_does_not_tell_who_has_an_account(http: TestClient, alice: Client) -> None:
    taken = http.post(f"{API}/auth/register",
                      json={"email": "Alice@Example.com", "password": "another " + PASSWORD})
    new = http.post(f"{API}/auth/register",
                    json={"email": "carol@example.com", "password": PASSWORD})
    assert taken.status_code == new.status_code == 202
    assert taken.json()["message"] == new.json()["message"]
    assert set(taken.json()) == set(new.json()) == {"email", "message"}
    # The existing account is untouched: its own password works, the stranger's does not.
    assert http.post(f"{API}/auth/login", json={"email": "alice@example.com",
                                                "password": PASSWORD}).status_code == 200
    assert http.post(f"{API}/auth/login", json={"email": "alice@example.com",
                                                "password": "another " + PASSWORD}
                     ).status_code == 401


def test_first_account_is_the_admin(http: TestClient, alice: Client, bob: Client) -> None:
    assert alice.me().is_admin is True
    assert bob.me().is_admin is False


def test_guessable_passwords_are_refused(http: TestClient) -> None:
    for weak in ("password123", "alicealice", "qwertyuiop", "carol@example.com1"):
        response = http.post(f"{API}/auth/register",
                             json={"email": "carol@example.com", "password": weak})
        assert response.status_code == 400, weak
        body = response.json()
        assert_error_shape(body, "invalid_input")
        assert body["details"]["field"] == "password"
        assert body["details"]["score"] < body["details"]["required_score"]
    assert http.post(f"{API}/auth/login", json={"email": "carol@example.com",
                                                "password": "password123"}).status_code == 401


def test_bad_registration_inputs(http: TestClient) -> None:
    short = http.post(f"{API}/auth/register", json={"email": "a@b.io", "password": "short"})
    assert short.status_code == 422
    assert_error_shape(short.json(), "validation_error")
    bad_email = http.post(f"{API}/auth/register", json={"email": "nope", "password": PASSWORD})
    assert bad_email.status_code == 422  # the schema's format: email
    assert_error_shape(bad_email.json(), "validation_error")


def test_wrong_password_and_missing_token_are_401(http: TestClient, alice: Client) -> None:
    wrong = http.post(f"{API}/auth/login", json={"email": "alice@example.com",
                                                 "password": "not the password"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert_error_shape(wrong.json(), "unauthenticated")
    unknown = http.post(f"{API}/auth/login", json={"email": "nobody@example.com",
                                                   "password": PASSWORD})
    assert unknown.status_code == 401
    assert unknown.json()["message"] == wrong.json()["message"]
    missing = http.get(f"{API}/models")
    assert missing.status_code == 401
    assert_error_shape(missing.json(), "unauthenticated")
    forged = http.get(f"{API}/models", headers={"Authorization": "Bearer tmls_forged"})
    assert forged.status_code == 401


def test_api_tokens_are_stored_hashed_and_revocable(http: TestClient, alice: Client,
                                                    studio) -> None:
    created = alice.create_token("ci")
    assert created.token.startswith("tmls_")
    ci = Client(http=http, token=created.token)
    assert ci.me().email == "alice@example.com"
    assert [t.name for t in alice.list_tokens()] == ["ci"]

    with studio.services.meta.engine.connect() as conn:
        hashes = set(conn.scalars(sa.select(TokenRow.token_hash)))
        password_hash = conn.scalar(sa.select(UserRow.password_hash))
        dump = " ".join(str(v) for row in conn.execute(sa.select(TokenRow)) for v in row)
    assert hashlib.sha256(created.token.encode()).hexdigest() in hashes
    assert created.token not in dump
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash

    alice.revoke_token(created.id)
    try:
        ci.me()
        raise AssertionError("a revoked token still works")
    except AuthenticationError:
        pass
    assert alice.list_tokens() == []


def test_login_is_rate_limited(http: TestClient, alice: Client) -> None:
    # The fixture's login used one of the five attempts allowed per window.
    codes = [http.post(f"{API}/auth/login", json={"email": "alice@example.com",
                                                  "password": "wrong password"}).status_code
             for _ in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    limited = http.post(f"{API}/auth/login", json={"email": "alice@example.com",
                                                   "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert_error_shape(limited.json(), "rate_limited")
    # Other accounts are not affected.
    other = http.post(f"{API}/auth/register", json={"email": "carol@example.com",
                                                    "password": PASSWORD})
    assert other.status_code == 202
    assert http.post(f"{API}/auth/login", json={"email": "carol@example.com",
                                                "password": PASSWORD}).status_code == 200


def test_sdk_raises_typed_errors(alice: Client) -> None:
    try:
        alice.register_transformer("fuse", command=["true"])
        raise AssertionError("expected a conflict")
    except ConflictError as exc:
        assert exc.details["http_status"] == 409
