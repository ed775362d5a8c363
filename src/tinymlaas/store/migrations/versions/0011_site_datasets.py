"""site datasets: a dataset whose file stays at a site (where its workers read it)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("site", sa.JSON(), nullable=True))
        batch.alter_column("location", existing_type=sa.String(length=100),
                           type_=sa.String(length=600), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("location", existing_type=sa.String(length=600),
                           type_=sa.String(length=100), existing_nullable=False)
        batch.drop_column("site")
