"""The warm pool: machines booted ahead of any preview, each claimed once.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_machines",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("preview_id", sa.String(32), nullable=True),
        sa.Column("instance", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pool_machines")
