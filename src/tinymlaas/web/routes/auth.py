"""Log in, register and log out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tinymlaas.api.deps import StudioDep
from tinymlaas.errors import TinymlaasError
from tinymlaas.service.users import REGISTERED
from tinymlaas.web.render import render
from tinymlaas.web.routing import WebRoute, safe_next
from tinymlaas.web.session import (
    SESSION_COOKIE,
    OptionalViewer,
    check_csrf,
    set_session_cookie,
)

__all__ = ["router"]

router = APIRouter(route_class=WebRoute)


@router.get("/")
def home(viewer: OptionalViewer) -> Response:
    return RedirectResponse("/projects" if viewer else "/login", status_code=303)


@router.get("/login")
def login_page(request: Request, viewer: OptionalViewer, next: str | None = None,
               registered: bool = False) -> Response:
    if viewer is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next, ""), "form": {},
                                          "notice": REGISTERED if registered else None})


def _signed_in(request: Request, studio: StudioDep, email: str, password: str,
               target: str) -> Response:
    client = request.client.host if request.client else ""
    token, secret = studio.accounts.login(email, password, client)
    # Without a page to return to, the user lands on their own project.
    target = target or f"/projects/{studio.accounts.store.get_user(token.user_id).default_project}"
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, secret, studio.settings.session_ttl_s)
    return response


@router.post("/login")
def login(request: Request, studio: StudioDep, email: Annotated[str, Form()] = "",
          password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "",
          csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    try:
        return _signed_in(request, studio, email, password, safe_next(next, ""))
    except TinymlaasError as exc:
        return render(request, "login.html", {"next": safe_next(next, ""), "error": exc.message,
                                              "form": {"email": email}},
                      status_code=exc.http_status)


@router.get("/register")
def register_page(request: Request, viewer: OptionalViewer) -> Response:
    if viewer is not None:
        return RedirectResponse("/projects", status_code=303)
    return render(request, "register.html", {"form": {}, "errors": {}})


@router.post("/register")
def register(request: Request, studio: StudioDep, email: Annotated[str, Form()] = "",
             password: Annotated[str, Form()] = "", name: Annotated[str, Form()] = "",
             csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    try:
        # New address or not, the answer is the same: on to the log-in page.
        studio.accounts.register(email, password, name)
        return RedirectResponse("/login?registered=true", status_code=303)
    except TinymlaasError as exc:
        field = str(exc.details.get("field", "")) if exc.details else ""
        errors = {field: exc.message} if field else {"form": exc.message}
        return render(request, "register.html", {"form": {"email": email, "name": name},
                                                 "errors": errors},
                      status_code=exc.http_status)


@router.post("/logout")
def logout(request: Request, studio: StudioDep,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        studio.accounts.end_session(secret)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
