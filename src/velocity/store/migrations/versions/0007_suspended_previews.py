"""Suspended previews are live: the one-live-preview-per-project index counts them.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BEFORE = "state IN ('provisioning', 'booting', 'ready', 'stopping')"
AFTER = "state IN ('provisioning', 'booting', 'ready', 'suspended', 'stopping')"


def _live_index(where: str) -> None:
    op.drop_index("uq_previews_live_user_project", table_name="previews")
    op.create_index(
        "uq_previews_live_user_project",
        "previews",
        ["user_id", "project_id"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    _live_index(AFTER)


def downgrade() -> None:
    _live_index(BEFORE)
