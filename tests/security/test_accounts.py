"""Log-in and registration as a stranger sees them: rate limits that a forged
X-Forwarded-For does not reset, answers that do not tell who has an account, and
passwords that a strength estimator finds hard to guess."""

from __future__ import annotations

import httpx
from security_support import API, PASSWORD, Server


def _login(http: httpx.Client, email: str, password: str, forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return http.post(f"{API}/auth/login", json={"email": email, "password": password},
                     headers=headers)


def test_forged_forwarded_for_does_not_reset_the_limit(server: Server, alice) -> None:
    # The fixture's log-in was one of the five attempts per account and window.
    with server.raw() as http:
        codes = [_login(http, "alice@example.com", "wrong password",
                        f"203.0.113.{i}").status_code for i in range(5)]
        assert codes == [401, 401, 401, 401, 429]
        # Per account: the right password from yet another "address" waits too.
        limited = _login(http, "alice@example.com", PASSWORD, "198.51.100.7")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


def test_one_client_trying_many_accounts_is_limited(make_server) -> None:
    server = make_server(TINYMLAAS_LOGIN_RATE_LIMIT_CLIENT="8")
    with server.raw() as http:
        codes = [_login(http, f"user{i}@example.com", PASSWORD, f"203.0.113.{i}").status_code
                 for i in range(10)]
    assert codes == [401] * 8 + [429] * 2


def test_forwarded_for_is_believed_from_configured_proxies_only(make_server) -> None:
    server = make_server(TINYMLAAS_LOGIN_RATE_LIMIT_CLIENT="8",
                         TINYMLAAS_TRUSTED_PROXIES="127.0.0.1")
    with server.raw() as http:
        # Behind the trusted proxy every client address has its own budget.
        codes = [_login(http, f"user{i}@example.com", PASSWORD, f"203.0.113.{i}").status_code
                 for i in range(10)]
        assert codes == [401] * 10
        same = [_login(http, f"other{i}@example.com", PASSWORD, "203.0.113.99").status_code
                for i in range(9)]
        assert same == [401] * 8 + [429]


def test_unknown_email_and_wrong_password_answer_alike(server: Server, alice) -> None:
    with server.raw() as http:
        wrong = _login(http, "alice@example.com", "not the password at all")
        unknown = _login(http, "nobody@example.com", "not the password at all")
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        taken = http.post(f"{API}/auth/register", json={"email": "alice@example.com",
                                                        "password": "stranger " + PASSWORD})
        fresh = http.post(f"{API}/auth/register", json={"email": "fresh@example.com",
                                                        "password": "stranger " + PASSWORD})
        assert taken.status_code == fresh.status_code == 202
        assert taken.json()["message"] == fresh.json()["message"]
        assert _login(http, "alice@example.com", "stranger " + PASSWORD).status_code == 401
        assert _login(http, "fresh@example.com", "stranger " + PASSWORD).status_code == 200


def test_guessable_passwords_are_refused(server: Server) -> None:
    with server.raw() as http:
        for weak in ("password1", "12345678", "iloveyou", "mallory@example.com"):
            response = http.post(f"{API}/auth/register",
                                 json={"email": "mallory@example.com", "password": weak})
            assert response.status_code in {400, 422}, weak
            assert response.json()["code"] in {"invalid_input", "validation_error"}
        assert _login(http, "mallory@example.com", "password1").status_code == 401
