"""Metadata store: SQLAlchemy 2 over SQLite (default) or PostgreSQL, migrated by Alembic."""

from tinymlaas.store.metadata import MetadataStore

__all__ = ["MetadataStore"]
