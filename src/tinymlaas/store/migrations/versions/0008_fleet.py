"""fleet: devices, releases, rollouts and their actions, device history, on-device inference

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('fleet_actions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('rollout_id', sa.String(length=40), nullable=False),
    sa.Column('device_id', sa.String(length=40), nullable=False),
    sa.Column('device_name', sa.String(length=100), nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('wave', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_fleet_actions_device_id'), 'fleet_actions', ['device_id'])
    op.create_index(op.f('ix_fleet_actions_rollout_id'), 'fleet_actions', ['rollout_id'])
    op.create_index(op.f('ix_fleet_actions_state'), 'fleet_actions', ['state'])
    op.create_table('fleet_devices',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('profile', sa.String(length=100), nullable=True),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('code_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('release_id', sa.String(length=40), nullable=True),
    sa.Column('health', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code_hash'),
    sa.UniqueConstraint('project', 'name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_fleet_devices_project'), 'fleet_devices', ['project'])
    op.create_table('fleet_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=40), nullable=False),
    sa.Column('action_id', sa.String(length=40), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_fleet_events_device_id'), 'fleet_events', ['device_id'])
    op.create_table('fleet_inference',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('device_id', sa.String(length=40), nullable=False),
    sa.Column('dataset_id', sa.String(length=40), nullable=True),
    sa.Column('inputs_sha', sa.String(length=64), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.JSON(), nullable=False),
    sa.Column('outputs_sha', sa.String(length=64), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_fleet_inference_device_id'), 'fleet_inference', ['device_id'])
    op.create_index(op.f('ix_fleet_inference_project'), 'fleet_inference', ['project'])
    op.create_table('fleet_releases',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=True),
    sa.Column('package_sha', sa.String(length=64), nullable=False),
    sa.Column('package_name', sa.String(length=200), nullable=False),
    sa.Column('package_kind', sa.String(length=40), nullable=False),
    sa.Column('golden_sha', sa.String(length=64), nullable=True),
    sa.Column('device_profile', sa.String(length=100), nullable=True),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('rollback_of', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project', 'version')
    )
    op.create_index(op.f('ix_fleet_releases_project'), 'fleet_releases', ['project'])
    op.create_table('fleet_rollouts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('project', sa.String(length=40), nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('group_name', sa.String(length=100), nullable=False),
    sa.Column('waves', sa.JSON(), nullable=False),
    sa.Column('error_threshold', sa.Float(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('current_wave', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_fleet_rollouts_project'), 'fleet_rollouts', ['project'])


def downgrade() -> None:
    op.drop_table("fleet_actions")
    op.drop_table("fleet_devices")
    op.drop_table("fleet_events")
    op.drop_table("fleet_inference")
    op.drop_table("fleet_releases")
    op.drop_table("fleet_rollouts")
