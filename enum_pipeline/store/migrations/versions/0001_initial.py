"""Initial inventory schema: projects, run_state, run_scopes, staging, history, cleanups.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _project_columns() -> list[sa.Column]:
    return [
        sa.Column("scope_key", sa.Text, nullable=False),
        sa.Column("source_kind", sa.String(32), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("vcs", sa.String(16)),
        sa.Column("path", sa.Text),
        sa.Column("remote_url", sa.Text),
        sa.Column("normalized_remote", sa.Text),
        sa.Column("default_branch", sa.Text),
        sa.Column("head_commit", sa.String(64)),
        sa.Column("last_commit_at", TS),
        sa.Column("markers", JSON),
        sa.Column("attributes", JSON),
        sa.Column("content_hash", sa.String(64), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "inventory",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("last_generation", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO inventory (id, last_generation) VALUES (1, 0)")
    op.create_table(
        "projects",
        sa.Column("project_key", sa.Text, primary_key=True),
        *_project_columns(),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("seen_generation", sa.BigInteger),
        sa.Column("last_confirmed_run_id", sa.String(64)),
        sa.Column("confirmed_generation", sa.BigInteger),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("missing_since", TS),
        sa.Column("missed_runs", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_projects_scope_generation", "projects", ["scope_key", "seen_generation"])
    op.create_index("ix_projects_generation", "projects", ["seen_generation"])
    op.create_table(
        "run_state",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flush_succeeded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attempt_run_id", sa.String(64)),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_start", sa.BigInteger),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        *[
            sa.Column(f"{name}_count", sa.BigInteger, nullable=False, server_default="0")
            for name in (
                "scanned",
                "staged",
                "flushed",
                "confirmed",
                "added",
                "changed",
                "unchanged",
                "removed",
            )
        ],
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('active', 'completed', 'failed')", name="ck_run_state_status"
        ),
    )
    op.create_index(
        "uq_run_state_one_active",
        "run_state",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "run_scopes",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("scope_key", sa.Text, primary_key=True),
        sa.Column("source_kind", sa.String(32), nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("protected", JSON),
        sa.Column("seen_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("fingerprint", JSON),
        sa.Column("ended_at", TS, nullable=False),
    )
    op.create_index("ix_run_scopes_scope", "run_scopes", ["scope_key"])
    op.create_table(
        "staged_projects",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("project_key", sa.Text, primary_key=True),
        *_project_columns(),
    )
    op.create_table(
        "removed_projects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_key", sa.Text, nullable=False),
        sa.Column("scope_key", sa.Text, nullable=False),
        sa.Column("removed_by_run_id", sa.String(64), nullable=False),
        sa.Column("removed_at", TS, nullable=False),
        sa.Column("row", JSON, nullable=False),
        sa.Column("restored_at", TS),
        sa.Column("restored_by", sa.Text),
    )
    op.create_index("ix_removed_projects_run", "removed_projects", ["removed_by_run_id"])
    op.create_index("ix_removed_projects_key", "removed_projects", ["project_key"])
    op.create_table(
        "cleanups",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("candidates", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("removed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("marked_missing", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text),
        sa.Column("details", JSON),
        sa.Column("approved_by", sa.Text),
        sa.Column("approved_max", sa.BigInteger),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('done', 'blocked', 'noop')", name="ck_cleanups_status"),
    )


def downgrade() -> None:
    for table in (
        "cleanups",
        "removed_projects",
        "staged_projects",
        "run_scopes",
        "run_state",
        "projects",
        "inventory",
    ):
        op.drop_table(table)
