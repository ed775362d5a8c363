"""Users: registration, log-in and API tokens.

:class:`AccountService` registers users, logs them in (argon2 password hashes, rate
limited), issues API tokens (only their sha256 is stored) and opens a user's
:class:`~tinymlaas.service.workspace.Workspace`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tinymlaas.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
)
from tinymlaas.service.services import Services
from tinymlaas.service.workspace import Workspace
from tinymlaas.store.accounts import AccountStore, ApiToken, User
from tinymlaas.store.metadata import new_id
from tinymlaas.store.paging import Key, Page

__all__ = [
    "REGISTERED",
    "AccountService",
    "LoginRateLimiter",
    "check_password",
    "hash_token",
]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")
MIN_PASSWORD = 8
#: zxcvbn's score (0-4) a password needs: "safely unguessable" against online attacks.
MIN_PASSWORD_SCORE = 3
#: Characters of a password the strength estimator reads (its cost grows with length;
#: zxcvbn refuses more than 72).
_ESTIMATED_CHARS = 72
#: The one answer to a registration, whether or not the address already had an account.
REGISTERED = ("If this address had no account, it has one now with a personal project: "
              "log in with it.")
TOKEN_PREFIX = "tmls_"


def hash_token(secret: str) -> str:
    """How a token is stored: its sha256 (a random 256-bit token needs no slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def check_password(password: str, user_inputs: list[str]) -> None:
    """Refuse short passwords and ones a strength estimator (zxcvbn) finds guessable.

    Raises:
        InvalidInputError: with zxcvbn's warning and suggestions.
    """
    from zxcvbn import zxcvbn

    if len(password) < MIN_PASSWORD:
        raise InvalidInputError(f"the password needs at least {MIN_PASSWORD} characters",
                                {"field": "password"})
    verdict = zxcvbn(password[:_ESTIMATED_CHARS], user_inputs=user_inputs)
    if verdict["score"] < MIN_PASSWORD_SCORE:
        feedback = verdict["feedback"]
        hints = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions",
                                                                               [])]))
        raise InvalidInputError(
            "the password is too easy to guess" + (f": {hints}" if hints else "; use a "
                                                   "few uncommon words"),
            {"field": "password", "score": verdict["score"],
             "required_score": MIN_PASSWORD_SCORE})



def _check_expiry(token: ApiToken) -> None:
    if token.expires_at is not None and token.expires_at < _now():
        raise AuthenticationError("the session has expired; log in again")

class LoginRateLimiter:
    """At most ``limit`` attempts per key in any ``window_s`` seconds (in process memory).

    Args:
        limit: Attempts allowed per window.
        window_s: Length of the sliding window in seconds.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        """Count an attempt; raises ``RateLimitedError`` when over the limit."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] > self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                retry = max(1, int(self.window_s - (now - hits[0])) + 1)
                raise RateLimitedError(f"too many log-in attempts; try again in {retry} s",
                                       {"retry_after_s": retry})
            hits.append(now)
            if len(self._hits) > 10_000:  # forget idle keys so memory stays bounded
                for stale in [k for k, v in self._hits.items()
                              if not v or now - v[-1] > self.window_s]:
                    del self._hits[stale]


class AccountService:
    """Users, log-in, API tokens and project sharing.

    Args:
        services: The service facade whose database holds the accounts.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.store = AccountStore(services.meta)
        self.hasher = PasswordHasher()
        self.limiter = LoginRateLimiter(self.settings.login_rate_limit,
                                        self.settings.login_rate_window_s)
        self.client_limiter = LoginRateLimiter(self.settings.login_rate_limit_client,
                                               self.settings.login_rate_window_s)
        self._dummy_hash = self.hasher.hash(secrets.token_hex(8))
        #: token hash -> (the token, its user, when this process checks it again)
        self._verified: dict[str, tuple[ApiToken, User, float]] = {}
        self._verified_lock = threading.Lock()

    # users --------------------------------------------------------------------------------

    def register(self, email: str, password: str, name: str = "") -> User | None:
        """Create an account with a personal project; the first account is the admin.

        An address that already has an account gets None after the same work, and the
        entry points answer both cases alike (:data:`REGISTERED`), so registration does not
        tell a stranger which addresses have accounts.
        """
        if not self.settings.allow_registration:
            raise ForbiddenError("registration is closed on this server; ask its admin")
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise InvalidInputError(f"{email!r} is not an email address", {"field": "email"})
        check_password(password, [email, *email.split("@"), name])
        user = User(id=new_id("user"), email=email, name=name.strip()[:100],
                    default_project=new_id("proj"))
        password_hash = self.hasher.hash(password)
        try:
            return self.store.add_user(user, password_hash,
                                       f"{(name.strip() or email.split('@')[0])[:80]}'s project")
        except ConflictError:
            return None

    def promote(self, email: str, admin: bool = True) -> User:
        """Make an account an admin (or not): ``tinymlaas users promote EMAIL`` on the server."""
        user = self.store.set_admin(email.strip().lower(), admin)
        if user is None:
            raise NotFoundError(f"no account for {email!r}", {"kind": "user"})
        return user

    def login(self, email: str, password: str, client: str = "") -> tuple[ApiToken, str]:
        """Check a password and issue a session token (returned once, stored hashed).

        Attempts are limited per account (against guessing one password from many
        addresses) and per client address (against trying many accounts from one). An
        unknown email and a wrong password get the same answer after the same work.
        """
        email = email.strip().lower()
        self.limiter.hit(f"account|{email}")
        self.client_limiter.hit(f"client|{client}")
        found = self.store.find_user(email)
        try:
            # Unknown emails cost the same hash check, so timing does not reveal accounts.
            self.hasher.verify(found[1] if found else self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            found = None
        if found is None:
            raise AuthenticationError("wrong email or password")
        user, stored = found
        if self.hasher.check_needs_rehash(stored):
            self.store.set_password_hash(user.id, self.hasher.hash(password))
        expires = _now() + timedelta(seconds=self.settings.session_ttl_s)
        return self._issue(user, "log-in", "session", expires)

    def authenticate(self, secret: str) -> User:
        """The user a bearer token belongs to.

        A verified token is remembered for ``token_cache_s`` (a fast keyed lookup, no
        query); revoking it here forgets it at once, other processes within that time.
        """
        user = self.cached_user(secret)
        if user is not None:
            return user
        found = self.store.find_token(hash_token(secret)) if secret else None
        if found is None:
            raise AuthenticationError("invalid or revoked token; log in again or create "
                                      "a new API token")
        token, user = found
        if self.settings.token_cache_s > 0:
            now = time.monotonic()
            with self._verified_lock:
                if len(self._verified) > 10_000:  # bounded: drop the stale ones
                    self._verified = {k: v for k, v in self._verified.items() if v[2] > now}
                self._verified[hash_token(secret)] = (token, user,
                                                      now + self.settings.token_cache_s)
        _check_expiry(token)
        return user

    def cached_user(self, secret: str) -> User | None:
        """The user of a token verified within ``token_cache_s``, without touching the
        database (so a request handler may call it on the event loop); None when the token
        is not remembered and :meth:`authenticate` must look it up.

        Raises:
            AuthenticationError: The remembered token has expired.
        """
        if not secret:
            return None
        with self._verified_lock:
            cached = self._verified.get(hash_token(secret))
        if cached is None or cached[2] <= time.monotonic():
            return None
        _check_expiry(cached[0])
        return cached[1]

    def _forget_tokens(self, user_id: str) -> None:
        with self._verified_lock:
            self._verified = {k: v for k, v in self._verified.items() if v[1].id != user_id}

    def create_token(self, user: User, name: str) -> tuple[ApiToken, str]:
        return self._issue(user, name.strip()[:100] or "api", "api", None)

    def list_tokens(self, user: User) -> list[ApiToken]:
        return self.store.list_tokens(user.id)

    def revoke_token(self, user: User, token_id: str) -> None:
        self._forget_tokens(user.id)
        if not self.store.delete_token(user.id, token_id):
            raise NotFoundError(f"token {token_id!r} not found")

    def end_session(self, secret: str) -> None:
        """Log out: the token stops working at once (a no-op for an unknown one)."""
        found = self.store.find_token(hash_token(secret))
        if found is not None:
            self._forget_tokens(found[1].id)
            self.store.delete_token(found[1].id, found[0].id)

    def page_tokens(self, user: User, limit: int, after: Key | None = None) -> Page[ApiToken]:
        return self.store.page_tokens(user.id, limit, after)

    def _issue(self, user: User, name: str, kind: str,
               expires: datetime | None) -> tuple[ApiToken, str]:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(id=new_id("tok"), user_id=user.id, name=name,
                         kind=kind, expires_at=expires)  # type: ignore[arg-type]
        return self.store.add_token(token, hash_token(secret)), secret

    # workspace ----------------------------------------------------------------------------

    def workspace(self, user: User) -> Workspace:
        return Workspace(self.services, self.store, user)
