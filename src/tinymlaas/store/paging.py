"""Keyset pagination: a page of records and the key of the last one.

A list is read in a stable order, ``(created_at, id)`` for the stored records, and a
page after a key holds the records strictly after it (``WHERE (created_at, id) > key
ORDER BY created_at, id LIMIT n + 1``: the extra record says whether there is a next page).
Unlike ``OFFSET``, a record inserted or deleted while someone pages neither repeats nor
hides another, and a deep page costs what the first does.

Keys travel as tuples of strings (the timestamp in ISO 8601), so the API can wrap them
in an opaque cursor without knowing what they mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_

from tinymlaas.errors import InvalidInputError

__all__ = ["Key", "Page", "keyset", "page_list", "page_rows"]

T = TypeVar("T")
#: Where a page ends: strings that sort like the list.
Key = tuple[str, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    """Up to ``limit`` items and, when more follow, the key to ask for the next page with."""

    items: list[T]
    next_key: Key | None = None


def _time_and_id(after: Key) -> tuple[datetime, str]:
    try:
        when, ident = after
        return datetime.fromisoformat(when), ident
    except (TypeError, ValueError):
        raise InvalidInputError("the page position is not one this list gave out; start "
                                "again from the first page", {"field": "cursor"}) from None


def keyset(query: Select[Any], table: Any, limit: int, after: Key | None = None, *,
           newest_first: bool = False) -> Select[Any]:
    """``query`` ordered by ``(created_at, id)`` (descending with ``newest_first``), from
    just after ``after``, reading one record more than ``limit``."""
    created, ident = table.created_at, table.id
    if after is not None:
        when, key_id = _time_and_id(after)
        if newest_first:
            query = query.where(or_(created < when, and_(created == when, ident < key_id)))
        else:
            query = query.where(or_(created > when, and_(created == when, ident > key_id)))
    order = (created.desc(), ident.desc()) if newest_first else (created, ident)
    return query.order_by(*order).limit(limit + 1)


def page_rows(rows: Iterable[Any], limit: int, convert: Callable[[Any], T]) -> Page[T]:
    """The page from the rows of a :func:`keyset` query (``limit + 1`` at most)."""
    found = list(rows)
    more = len(found) > limit
    found = found[:limit]
    last = found[-1] if more else None
    return Page([convert(row) for row in found],
                (last.created_at.isoformat(), last.id) if last is not None else None)


def page_list(items: Sequence[T], key: Callable[[T], Key], limit: int,
              after: Key | None = None) -> Page[T]:
    """The same for a list held in memory (a catalog): ``items`` in ``key`` order, after
    ``after``. Keys of lists in memory are strings, compared as tuples."""
    ordered = sorted(items, key=key)
    if after is not None:
        after = tuple(str(part) for part in after)
        ordered = [item for item in ordered if key(item) > after]
    more = len(ordered) > limit
    page = ordered[:limit]
    return Page(page, key(page[-1]) if more else None)
