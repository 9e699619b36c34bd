"""Durable state: previews, their history and projects. The only code that talks to the database.

SQLite file by default, PostgreSQL through ``DATABASE_URL``; the schema is made by Alembic migrations
(``store/migrations``) that run at start.
"""

from velocity.store.sql import CreateOutcome, Store

__all__ = ["CreateOutcome", "Store"]
