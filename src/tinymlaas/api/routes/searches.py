"""Searches (``optimize``): create (executed in the background at once), list, inspect,
cancel, and follow live through server-sent events."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tinymlaas.api.common import AUTH_ERRORS
from tinymlaas.api.deps import Studio, StudioDep, WorkspaceDep
from tinymlaas.api.pagination import PAGED, PagingDep
from tinymlaas.api.responses import event_stream
from tinymlaas.api.search_schemas import SearchCreate, SearchEventPublic, SearchPublic
from tinymlaas.domain.searches import Search, SearchState
from tinymlaas.engine import RunEvent
from tinymlaas.service.searches import CANDIDATE, STATE, SearchRequest
from tinymlaas.service.workspace import Workspace

__all__ = ["router", "search_events_response"]

router = APIRouter(prefix="/searches", tags=["searches"], responses=AUTH_ERRORS)


@router.post("", response_model=SearchPublic, status_code=status.HTTP_201_CREATED)
def create_search(body: SearchCreate, ws: WorkspaceDep, studio: StudioDep) -> object:
    """Check the model, dataset and device, record the search and start it in the
    background; follow it with ``GET /searches/{id}/events`` or poll ``GET
    /searches/{id}``."""
    search = ws.create_search(SearchRequest.model_validate(body.request()), body.project)
    studio.searches.start(search.id)
    return search


@router.get("", response_model=list[SearchPublic], responses=PAGED)
def list_searches(ws: WorkspaceDep, paging: PagingDep,
                  project: Annotated[str | None, Query(max_length=100)] = None) -> object:
    """Searches in the user's projects (or one of them), newest first, a page at a time."""
    return paging.send(ws.page_searches(paging.limit, paging.after, project))


@router.get("/{search_id}", response_model=SearchPublic)
def get_search(search_id: str, ws: WorkspaceDep) -> object:
    """A search with its candidates so far and, once it has ended, its outcome."""
    return ws.get_search(search_id)


@router.post("/{search_id}/cancel", response_model=SearchPublic,
             status_code=status.HTTP_202_ACCEPTED)
def cancel_search(search_id: str, ws: WorkspaceDep) -> object:
    """Stop a queued or running search (409 once it has ended). A running search stops its
    current candidate run within seconds and ends ``cancelled``, keeping what it found."""
    return ws.cancel_search(search_id)


@router.get("/{search_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description":
                             "event: search (a SearchPublic, first and last), event: "
                             "candidate (a Candidate, as each finishes), event: state (a "
                             "SearchEventPublic), event: end."}})
async def search_events(search_id: str, ws: WorkspaceDep,
                        studio: StudioDep) -> StreamingResponse:
    """Live progress as server-sent events.

    The stream opens with the search as it is (so a late client sees what already
    happened), then one ``candidate`` event per finished candidate run and a ``state``
    event per change of state, and closes with the final ``search`` and an ``end`` event
    once the search has ended.
    """
    return await search_events_response(ws, search_id, studio)


def _search_json(search: Search) -> str:
    return SearchPublic.model_validate(search).model_dump_json()


async def search_events_response(ws: Workspace, search_id: str,
                                 studio: Studio) -> StreamingResponse:
    """The search's live events (see :func:`search_events`)."""
    key = (await run_in_threadpool(ws.get_search, search_id)).id

    def shown(event: RunEvent) -> tuple[str, str] | None:
        if event.stage == CANDIDATE:
            return "candidate", json.dumps(event.data)
        if event.stage == STATE:
            return "state", SearchEventPublic(
                search_id=key, state=SearchState(event.status)).model_dump_json()
        return None

    return event_stream(studio, key, lambda: studio.searches.get(key),
                        lambda search: search.done, ("search", _search_json), shown,
                        lambda search: {"search_id": key, "state": search.state.value})
