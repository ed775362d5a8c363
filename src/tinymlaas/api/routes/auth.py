"""Registration and log-in."""

from fastapi import APIRouter, Request, status

from tinymlaas.api.common import ERRORS
from tinymlaas.api.deps import AccountsDep
from tinymlaas.api.schemas import (
    ErrorBody,
    LoginRequest,
    LoginResponse,
    RegistrationResponse,
    UserCreate,
    UserPublic,
)
from tinymlaas.service.users import REGISTERED

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", response_model=RegistrationResponse,
             status_code=status.HTTP_202_ACCEPTED,
             responses={**ERRORS, 403: {"model": ErrorBody}})
def register(body: UserCreate, accounts: AccountsDep) -> object:
    """Create an account with a personal project, then log in. The answer is the same
    whether or not the address already had an account (the first account is the admin)."""
    accounts.register(body.email, body.password, body.name)
    return RegistrationResponse(email=body.email.strip().lower(), message=REGISTERED)


@router.post("/login", response_model=LoginResponse,
             responses={**ERRORS, 401: {"model": ErrorBody}, 429: {"model": ErrorBody}})
def login(body: LoginRequest, request: Request, accounts: AccountsDep) -> object:
    """Exchange email and password for a bearer token (rate limited per account and client)."""
    client = request.client.host if request.client else ""
    token, secret = accounts.login(body.email, body.password, client)
    return LoginResponse(access_token=secret, expires_at=token.expires_at,
                         user=UserPublic.model_validate(accounts.store.get_user(token.user_id)))
