"""Sites in the metadata store, on SQLite and PostgreSQL: migration 0009 matches the
tables' models and goes down and up again, names are unique per project, heartbeats
upsert one row per worker, and deleting a site or its project takes its workers along."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from tinymlaas.domain.sites import Site, SiteWorker, worker_alive
from tinymlaas.errors import ConflictError, NotFoundError
from tinymlaas.store import MetadataStore, cleanup
from tinymlaas.store.metadata import MIGRATIONS
from tinymlaas.store.sites import SiteStore
from tinymlaas.store.tables import Base

SITE_TABLES = {"sites", "site_workers"}


@pytest.fixture
def meta(database_url: str):
    store = MetadataStore(database_url)
    store.ensure_project("default")
    store.ensure_project("other")
    yield store
    store.close()


def _diff_of_site_tables(meta: MetadataStore) -> list[object]:
    with meta.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def touches(entry: object) -> bool:
        items = entry if isinstance(entry, list) else [entry]
        return any(getattr(part, "name", None) in SITE_TABLES
                   or getattr(getattr(part, "table", None), "name", None) in SITE_TABLES
                   for item in items for part in (item if isinstance(item, tuple) else (item,)))

    return [entry for entry in diff if touches(entry)]


def test_migration_0009_matches_the_models_and_goes_down_and_up(meta: MetadataStore) -> None:
    assert set(sa.inspect(meta.engine).get_table_names()) >= SITE_TABLES
    assert _diff_of_site_tables(meta) == []
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with meta.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    assert not SITE_TABLES & set(sa.inspect(meta.engine).get_table_names())
    meta.migrate()
    assert set(sa.inspect(meta.engine).get_table_names()) >= SITE_TABLES
    assert _diff_of_site_tables(meta) == []


def test_sites_are_unique_per_project_and_scoped(meta: MetadataStore) -> None:
    sites = SiteStore(meta)
    sites.add_site(Site(id="site-a", project="default", name="factory"), "a" * 64)
    with pytest.raises(ConflictError):
        sites.add_site(Site(id="site-b", project="default", name="factory"), "b" * 64)
    sites.add_site(Site(id="site-c", project="other", name="factory"), "c" * 64)
    assert sites.get_site("factory", ["default"]).id == "site-a"
    assert sites.get_site("site-c").project == "other"
    with pytest.raises(NotFoundError):
        sites.get_site("site-c", ["default"])
    with pytest.raises(ConflictError):
        sites.get_site("factory", ["default", "other"])
    assert sites.site_by_token("c" * 64).id == "site-c"
    assert sites.site_by_token("d" * 64) is None
    page = sites.page_sites(["default", "other"], 1)
    assert [s.id for s in page.items] == ["site-a"] and page.next_key is not None
    rest = sites.page_sites(["default", "other"], 5, page.next_key)
    assert [s.id for s in rest.items] == ["site-c"] and rest.next_key is None


def test_heartbeats_upsert_and_deleting_takes_the_workers(meta: MetadataStore) -> None:
    sites = SiteStore(meta)
    sites.add_site(Site(id="site-a", project="default", name="factory"), "a" * 64)
    sites.heartbeat("site-a", "w1", "h1", [])
    errors: list[BaseException] = []

    def beat(i: int) -> None:
        try:
            sites.heartbeat("site-a", "w2", f"h{i}", [f"run-{i}/0"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    workers = sites.get_site("site-a").workers
    assert sorted(w.id for w in workers) == ["w1", "w2"]
    with meta.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM site_workers")).scalar() == 2
    w2 = next(w for w in workers if w.id == "w2")
    assert w2.running_steps == [f"run-{w2.hostname[1:]}/0"]  # one heartbeat's, whole
    assert worker_alive(w2)
    assert not worker_alive(SiteWorker(id="x", hostname="h", last_heartbeat=datetime(
        2020, 1, 1, tzinfo=UTC)))
    sites.delete_site("site-a")
    with pytest.raises(NotFoundError):
        sites.get_site("site-a")
    with meta.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM site_workers")).scalar() == 0


def test_a_site_lists_a_bounded_number_of_workers_and_gone_ones_make_room(
        meta: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinymlaas.store import sites as site_store

    monkeypatch.setattr(site_store, "MAX_WORKERS", 3)
    sites = SiteStore(meta)
    sites.add_site(Site(id="site-b", project="default", name="plant"), "b" * 64)
    for worker in ("w1", "w2", "w3"):
        sites.heartbeat("site-b", worker, "h", [])
    with pytest.raises(ConflictError, match="3 live workers"):
        sites.heartbeat("site-b", "w4", "h", [])
    sites.heartbeat("site-b", "w2", "h", [])  # a listed worker still beats
    with meta.engine.begin() as conn:  # w1 stopped long ago
        conn.execute(sa.text("UPDATE site_workers SET last_heartbeat = :t "
                             "WHERE worker_id = 'w1'"), {"t": datetime(2020, 1, 1, tzinfo=UTC)})
    sites.heartbeat("site-b", "w4", "h", [])
    assert sorted(w.id for w in sites.get_site("site-b").workers) == ["w2", "w3", "w4"]


def test_deleting_a_project_deletes_its_sites(meta: MetadataStore) -> None:
    sites = SiteStore(meta)
    meta.ensure_project("doomed")
    sites.add_site(Site(id="site-d", project="doomed", name="lab"), "d" * 64)
    sites.heartbeat("site-d", "w1", "h", [])
    sites.add_site(Site(id="site-k", project="other", name="lab"), "k" * 64)
    cleanup.delete_project(meta, "doomed")
    assert [s.id for s in sites.list_sites(["doomed", "other"])] == ["site-k"]
    with meta.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM site_workers")).scalar() == 0
