"""A server process remembers verified tokens for ``TINYMLAAS_TOKEN_CACHE_S``: revoking a
token or logging out through the process stops it at once; a token deleted by another
process (straight in the database) works here until the time is up, and with 0 it never
does."""

from __future__ import annotations

import pytest
from api_support import new_user
from fastapi.testclient import TestClient

from tinymlaas.api.deps import Studio
from tinymlaas.errors import AuthenticationError


def _delete_elsewhere(studio: Studio, secret: str) -> None:
    """What another worker process does when the token is revoked there."""
    from tinymlaas.service.users import hash_token

    found = studio.accounts.store.find_token(hash_token(secret))
    assert found is not None
    assert studio.accounts.store.delete_token(found[1].id, found[0].id)


def test_revoking_and_logging_out_here_take_effect_at_once(http: TestClient,
                                                           studio: Studio) -> None:
    studio.settings.token_cache_s = 60.0
    alice = new_user(http, "alice@example.com")
    ci = new_user(http, "alice@example.com")  # a second log-in: another session token
    created = alice.create_token("ci")
    ci.token = created.token
    assert ci.me().email == "alice@example.com"  # verified, so remembered
    alice.revoke_token(created.id)
    with pytest.raises(AuthenticationError):
        ci.me()

    session = alice.token
    assert alice.me().email == "alice@example.com"
    studio.accounts.end_session(session)
    with pytest.raises(AuthenticationError):
        alice.me()


@pytest.mark.parametrize("cache_s", [0.0, 60.0])
def test_a_token_revoked_by_another_process(http: TestClient, studio: Studio,
                                            cache_s: float) -> None:
    studio.settings.token_cache_s = cache_s
    bob = new_user(http, "bob@example.com")
    assert bob.me().email == "bob@example.com"
    _delete_elsewhere(studio, bob.token)
    if cache_s:
        assert bob.me().email == "bob@example.com"  # remembered here for up to cache_s
        studio.accounts._forget_tokens(bob.me().id)  # what the time running out does
    with pytest.raises(AuthenticationError):
        bob.me()
