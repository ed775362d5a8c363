"""custom devices belong to a project

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.rename_table("devices", "devices_global")
    op.create_table(
        "devices",
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("project", "name"),
    )
    # Devices made before projects owned them go to the default project.
    op.execute("INSERT INTO devices (project, name, spec) "
               "SELECT 'default', name, spec FROM devices_global")
    op.drop_table("devices_global")


def downgrade() -> None:
    op.rename_table("devices", "devices_project")
    op.create_table(
        "devices",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO devices (name, spec) SELECT name, MIN(spec) FROM devices_project "
               "GROUP BY name")
    op.drop_table("devices_project")
