"""The content digest is computed by the database, at flush time.

- ``staged_projects`` loses ``content_hash``: staging holds what a source saw, nothing derived.
- ``projects.content_hash`` is recomputed with the SQL digest the flush now uses (PostgreSQL:
  MD5 of ``json_build_array`` of the hashed columns, timestamps at UTC; SQLite: SHA-1 of
  ``json_array`` of them, by the ``enum_digest`` function the store registers on its
  connections), so the first run after the upgrade sees unchanged projects as unchanged.

Downgrade gives staging its column back (empty rows' digests are the flush's business again)
and leaves ``projects.content_hash`` as it is: the older code then reports every row changed
once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The columns the digest covers, in order, as they are at this revision (a migration must not
# change when the application code does).
_HASHED = [
    "scope_key", "source_kind", "name", "location", "vcs", "path", "remote_url",
    "normalized_remote", "default_branch", "head_commit", "last_commit_at", "markers",
    "attributes", "archived", "fork", "visibility", "description", "topics", "language",
    "license", "stars", "created_at", "last_activity_at", "current_branch", "remotes",
    "upstream", "in_sync", "shallow", "has_stash", "last_fetch_at",
]  # fmt: skip
_TIMES = {"last_commit_at", "created_at", "last_activity_at", "last_fetch_at"}


def _sqlite_digest(text):
    if text is None:
        return None
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _digest_sql(dialect: str) -> str:
    if dialect == "postgresql":
        cols = ", ".join(f"timezone('UTC', {c})" if c in _TIMES else c for c in _HASHED)
        return f"md5(CAST(json_build_array({cols}) AS TEXT))"
    return f"enum_digest(json_array({', '.join(_HASHED)}))"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    conn = op.get_bind()
    if dialect == "sqlite":
        conn.connection.dbapi_connection.create_function(
            "enum_digest", 1, _sqlite_digest, deterministic=True
        )
    with op.batch_alter_table("staged_projects") as batch:
        batch.drop_column("content_hash")
    op.execute(f"UPDATE projects SET content_hash = {_digest_sql(dialect)}")


def downgrade() -> None:
    with op.batch_alter_table("staged_projects") as batch:
        batch.add_column(
            sa.Column("content_hash", sa.String(64), nullable=False, server_default="")
        )
