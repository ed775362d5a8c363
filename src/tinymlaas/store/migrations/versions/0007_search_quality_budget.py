"""searches: a quality budget in the task's own metric (e.g. cosine=0.01)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch_op:
        batch_op.add_column(sa.Column("quality_budget", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch_op:
        batch_op.drop_column("quality_budget")
