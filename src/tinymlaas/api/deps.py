"""Request dependencies, as ``Annotated`` aliases the routes declare in their signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tinymlaas.api.runtime import EventBus, RunQueue
from tinymlaas.config import Settings
from tinymlaas.errors import AuthenticationError
from tinymlaas.service import Services
from tinymlaas.service.fleet import Fleet
from tinymlaas.service.searches import Searches
from tinymlaas.service.users import AccountService
from tinymlaas.service.workspace import Workspace
from tinymlaas.store.accounts import User

__all__ = [
    "AccountsDep",
    "CurrentUser",
    "SettingsDep",
    "Studio",
    "StudioDep",
    "WorkspaceDep",
]


@dataclass
class Studio:
    """What the app holds for its lifetime (``app.state.studio``)."""

    settings: Settings
    services: Services
    accounts: AccountService
    bus: EventBus
    runs: RunQueue
    searches: Searches
    fleet: Fleet


# The dependencies that only read app state are ``async``: FastAPI runs a plain ``def``
# dependency in its thread pool, a hop that costs more than they do.
async def get_studio(request: Request) -> Studio:
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(get_studio)]


async def get_settings_dep(studio: StudioDep) -> Settings:
    return studio.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_accounts(studio: StudioDep) -> AccountService:
    return studio.accounts


AccountsDep = Annotated[AccountService, Depends(get_accounts)]

_bearer = HTTPBearer(auto_error=False, description="A log-in or API token.")


# The two below are asked for on almost every request: they take the accounts from the
# request rather than through the dependencies above, each of which costs a little to solve.
async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise AuthenticationError("send 'Authorization: Bearer <token>'; get a token from "
                                  "POST /api/v1/auth/login")
    # A token verified moments ago is answered from memory on the event loop; only a
    # lookup in the database goes to the thread pool.
    accounts: AccountService = request.app.state.studio.accounts
    user = accounts.cached_user(credentials.credentials)
    if user is None:
        user = await run_in_threadpool(accounts.authenticate, credentials.credentials)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_workspace(request: Request, user: CurrentUser) -> Workspace:
    return request.app.state.studio.accounts.workspace(user)  # no I/O: a view for the user


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
