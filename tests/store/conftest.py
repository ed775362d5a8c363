"""The metadata store on SQLite and PostgreSQL (``database_url``), migrated to the head."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinymlaas.store import MetadataStore


@pytest.fixture
def meta(database_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore(database_url)
    yield store
    store.close()
