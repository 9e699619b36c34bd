"""Projects' snapshots in the database, beside their rows: every replica serves every project, and
a new orchestrator machine (a deploy) finds the snapshots the last one saved.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column(
            "project_id",
            sa.String(64),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("dependencies_key", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
