"""The schema, as SQLAlchemy Core tables; migrations in ``migrations/versions`` create the same."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

LIVE_STATE_SQL = "state IN ('provisioning', 'booting', 'ready', 'suspended', 'stopping')"

previews = sa.Table(
    "previews",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("machine_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("failure_reason", sa.Text, nullable=True),
    sa.Column("failure_logs", sa.JSON, nullable=False, default=list),
    # The replica whose tasks launch and watch the preview (its instance id); the leader takes over
    # the previews of replicas that stopped beating.
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Index("ix_previews_user_state", "user_id", "state"),
    # One live preview per (user, project): the database refuses a second one even under a race.
    sa.Index(
        "uq_previews_live_user_project",
        "user_id",
        "project_id",
        unique=True,
        sqlite_where=sa.text(LIVE_STATE_SQL),
        postgresql_where=sa.text(LIVE_STATE_SQL),
    ),
)

preview_events = sa.Table(
    "preview_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("preview_id", sa.String(32), sa.ForeignKey("previews.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_preview_events_preview", "preview_id", "id"),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("file_count", sa.Integer, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Each project's snapshot (a gzip tarball, up to MAX_PROJECT_BYTES) and the digest of what decides
# its node_modules (``projects.dependencies_key``), replaced with the project in one transaction.
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column(
        "project_id", sa.String(64), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("dependencies_key", sa.String(64), nullable=True),
)

# Signed preview links already exchanged for a session: a link opens a preview once.
used_links = sa.Table(
    "used_links",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_used_links_expires", "expires_at"),
)

# Each orchestrator replica's heartbeat: one gone quiet for a few intervals has stopped, and its
# previews' work passes to the leader.
instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
)

# A lease per singleton job: the maintenance loops run on the replica holding "maintenance" until
# it expires unrenewed.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# Each attempt to deliver a preview event as a webhook (velocity.loops.webhooks); an event with a
# ``final`` attempt is done, delivered or given up on.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Integer, nullable=False, index=True),
    sa.Column("preview_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
)

# The warm pool (velocity.service.pool): one row per machine booted ahead of any preview, from its
# create until its preview records it; one statement decides which claim gets a ready machine.
pool_machines = sa.Table(
    "pool_machines",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # provisioning | booting | ready | claimed
    sa.Column("machine_id", sa.String(64), nullable=True),
    sa.Column("region", sa.String(32), nullable=True),
    sa.Column("preview_id", sa.String(32), nullable=True),  # the preview that claimed it
    sa.Column("instance", sa.String(128), nullable=False),  # the replica that made it
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
