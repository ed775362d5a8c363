"""job attempts: the leases of steps that run at a site; the site a run runs at

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("site", sa.String(length=40), nullable=True))
    op.create_table('job_attempts',
    sa.Column('job_id', sa.String(length=200), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('job', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.create_index(op.f('ix_job_attempts_run_id'), 'job_attempts', ['run_id'])
    op.create_index(op.f('ix_job_attempts_status'), 'job_attempts', ['status'])


def downgrade() -> None:
    op.drop_index(op.f('ix_job_attempts_status'), table_name='job_attempts')
    op.drop_index(op.f('ix_job_attempts_run_id'), table_name='job_attempts')
    op.drop_table('job_attempts')
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("site")
