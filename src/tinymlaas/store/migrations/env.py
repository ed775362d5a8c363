"""Alembic environment: runs on the connection the store hands over."""

from alembic import context

from tinymlaas.store import accounts as _accounts  # noqa: F401  (registers its tables)
from tinymlaas.store import attempts as _attempts  # noqa: F401
from tinymlaas.store import fleet as _fleet  # noqa: F401
from tinymlaas.store import sites as _sites  # noqa: F401
from tinymlaas.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
