"""Browser sessions and CSRF protection.

Logging in creates an ordinary API token through the accounts service (kind ``session``,
with the server's session lifetime); the browser keeps it in an HttpOnly, SameSite=Lax
cookie, so pages obey exactly the permissions of the API. State-changing forms carry a
CSRF token in a hidden field:

* signed in: an HMAC of the session token, so it is fixed for the session and useless
  without the cookie that scripts cannot read;
* signed out (log-in and register forms): a random value also set as a cookie
  (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from tinymlaas.api.deps import Studio, get_studio
from tinymlaas.errors import AuthenticationError, TinymlaasError
from tinymlaas.service.workspace import Workspace
from tinymlaas.store.accounts import User

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "CsrfError",
    "LoginRequired",
    "OptionalViewer",
    "Viewer",
    "WebSession",
    "check_csrf",
    "csrf_token",
    "current_viewer",
    "optional_viewer",
    "remember_csrf",
    "set_session_cookie",
]

SESSION_COOKIE = "tinymlaas_session"
CSRF_COOKIE = "tinymlaas_csrf"
CSRF_FIELD = "csrf_token"


class CsrfError(TinymlaasError):
    """A form came without the token of the page that showed it."""

    http_status = 403
    exit_code = 5
    code = "csrf_failed"


class LoginRequired(AuthenticationError):
    """No valid session cookie: pages redirect to the log-in form."""


@dataclass
class Viewer:
    """The signed-in user of a request and their workspace."""

    user: User
    workspace: Workspace
    secret: str


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, secret: str,
                       max_age: float) -> None:
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(max_age), httponly=True,
                        samesite="lax", secure=_secure(request), path="/")


def _anonymous_csrf(request: Request) -> str:
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) < 32:
        value = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = value
    return value


def csrf_token(request: Request) -> str:
    """The token forms on this page must send back."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        return hmac.new(secret.encode(), b"tinymlaas-web-csrf", hashlib.sha256).hexdigest()
    return _anonymous_csrf(request)


def remember_csrf(request: Request, response: Response) -> None:
    """Set the anonymous CSRF cookie when this request had to invent one."""
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="lax",
                            secure=_secure(request), path="/")


def check_csrf(request: Request, sent: str | None) -> None:
    """Raise :class:`CsrfError` unless ``sent`` matches this session's token."""
    secret = request.cookies.get(SESSION_COOKIE)
    expected = csrf_token(request) if secret else request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise CsrfError("the form expired or came from another site; reload the page and "
                        "try again")


def optional_viewer(request: Request,
                    studio: Annotated[Studio, Depends(get_studio)]) -> Viewer | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        user = studio.accounts.authenticate(secret)
    except AuthenticationError:
        return None
    return Viewer(user, studio.accounts.workspace(user), secret)


def current_viewer(viewer: Annotated[Viewer | None, Depends(optional_viewer)]) -> Viewer:
    if viewer is None:
        raise LoginRequired("log in to continue")
    return viewer


WebSession = Annotated[Viewer, Depends(current_viewer)]
OptionalViewer = Annotated[Viewer | None, Depends(optional_viewer)]
