"""Datasets at a site (migration 0011) on SQLite and PostgreSQL: the ``site`` column and a
location long enough for ``site://NAME/path``, stored and read back, down and up again."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from tinymlaas.domain import Artifact, ArtifactKind, Dataset
from tinymlaas.domain.sites import SiteDataset
from tinymlaas.store import MetadataStore
from tinymlaas.store.metadata import MIGRATIONS
from tinymlaas.store.tables import Base


def _datasets_diff(meta: MetadataStore) -> list[object]:
    with meta.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [entry for entry in diff if "datasets" in repr(entry)]


def test_a_site_dataset_is_stored_and_read_back(meta: MetadataStore) -> None:
    path = "plant/" + "p" * 480 + "/data.npz"
    meta.add_artifact(Artifact(sha256="ab" * 32, kind=ArtifactKind.dataset_npz,
                               size_bytes=10, filename="d.npz"))
    meta.add_dataset(Dataset(
        id="data_1", name="d", artifact_sha="ab" * 32, source_format="csv", num_samples=5,
        feature_shape=[3], num_classes=2, class_names=["a", "b"],
        location=f"site://factory/{path}",
        site=SiteDataset(site_id="site_1", path=path, label_column="label",
                         image_size=(32, 32), source_sha256="cd" * 32, source_bytes=99,
                         fields={"x": ("<f4", [3])})))
    back = meta.get_dataset("d")
    assert back.location == f"site://factory/{path}"
    assert back.site is not None
    assert (back.site.site_id, back.site.path, back.site.image_size) == \
        ("site_1", path, (32, 32))
    assert back.site.fields == {"x": ("<f4", [3])}
    assert meta.get_dataset("data_1").site == back.site


def test_migration_0011_matches_the_models_and_goes_down_and_up(meta: MetadataStore) -> None:
    columns = {c["name"]: c for c in sa.inspect(meta.engine).get_columns("datasets")}
    assert "site" in columns and columns["location"]["type"].length == 600
    assert _datasets_diff(meta) == []
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with meta.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    columns = {c["name"]: c for c in sa.inspect(meta.engine).get_columns("datasets")}
    assert "site" not in columns and columns["location"]["type"].length == 100
    meta.migrate()
    assert _datasets_diff(meta) == []
