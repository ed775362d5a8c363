"""sites: a project's sites (token sha256 only) and the workers that report from them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sites',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project', 'name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_sites_project'), 'sites', ['project'])
    op.create_table('site_workers',
    sa.Column('site_id', sa.String(length=40), nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('last_heartbeat', sa.DateTime(timezone=True), nullable=False),
    sa.Column('running_steps', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('site_id', 'worker_id')
    )
    op.create_index(op.f('ix_site_workers_last_heartbeat'), 'site_workers',
                    ['last_heartbeat'])


def downgrade() -> None:
    op.drop_index(op.f('ix_site_workers_last_heartbeat'), table_name='site_workers')
    op.drop_table('site_workers')
    op.drop_index(op.f('ix_sites_project'), table_name='sites')
    op.drop_table('sites')
