"""The current user and their API tokens."""

from fastapi import APIRouter, Response, status

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import AccountsDep, CurrentUser
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.schemas import TokenCreate, TokenCreated, TokenPublic, UserPublic

router = APIRouter(prefix="/users/me", tags=["users"], responses=AUTH_ERRORS)


@router.get("", response_model=UserPublic)
def me(user: CurrentUser) -> object:
    """Who the token belongs to."""
    return user


@router.get("/tokens", response_model=list[TokenPublic], responses=PAGED)
def list_tokens(user: CurrentUser, accounts: AccountsDep, paging: PagingDep) -> object:
    """The user's API tokens (never their secrets), oldest first."""
    return paging.send(accounts.page_tokens(user, paging.limit, paging.after))


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, user: CurrentUser, accounts: AccountsDep) -> object:
    """A new API token; its secret is in this response only."""
    token, secret = accounts.create_token(user, body.name)
    return TokenCreated(token=secret, **token.model_dump(exclude={"user_id"}))


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
def revoke_token(token_id: str, user: CurrentUser, accounts: AccountsDep) -> Response:
    """Revoke an API token."""
    accounts.revoke_token(user, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
