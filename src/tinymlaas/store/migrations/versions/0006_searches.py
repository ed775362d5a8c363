"""searches (optimize): request, state, candidates and outcome

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_name", sa.String(length=100), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=True),
        sa.Column("objective", sa.String(length=20), nullable=False),
        sa.Column("max_accuracy_drop", sa.Float(), nullable=False),
        sa.Column("time_budget_s", sa.Float(), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=True),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("pareto", sa.JSON(), nullable=False),
        sa.Column("recommended", sa.String(length=40), nullable=True),
        sa.Column("closest", sa.String(length=40), nullable=True),
        sa.Column("sensitivity", sa.JSON(), nullable=False),
        sa.Column("runner", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("elapsed_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_searches_project", "searches", ["project"])
    op.create_index("ix_searches_state", "searches", ["state"])


def downgrade() -> None:
    op.drop_index("ix_searches_state", table_name="searches")
    op.drop_index("ix_searches_project", table_name="searches")
    op.drop_table("searches")
