"""Project columns for what every source knows; values that sat in ``attributes`` move there.

Code-host rows: archived, fork, visibility, description, topics, language, stars, created_at
and last_activity_at (GitHub pushed_at, GitLab last_activity_at, Gitea updated_at) leave the
``attributes`` JSON for columns of their own. Checkout rows: ``default_branch`` held the
checked-out branch, which becomes ``current_branch`` (a bare repository's HEAD stays its default
branch); ``last_activity_at`` is the last commit. The rest (licence, remotes, sync state, …)
stays NULL until the next scan reads it: nothing is guessed. ``projects`` and
``staged_projects`` are both rewritten, so a flush after the upgrade copies consistent rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BATCH = 1000
TABLES = ("projects", "staged_projects")


def _columns() -> list[sa.Column]:
    return [
        sa.Column("archived", sa.Boolean),
        sa.Column("fork", sa.Boolean),
        sa.Column("visibility", sa.String(16)),
        sa.Column("description", sa.Text),
        sa.Column("topics", JSON),
        sa.Column("language", sa.Text),
        sa.Column("license", sa.Text),
        sa.Column("stars", sa.BigInteger),
        sa.Column("created_at", TS),
        sa.Column("last_activity_at", TS),
        sa.Column("current_branch", sa.Text),
        sa.Column("remotes", JSON),
        sa.Column("upstream", sa.Text),
        sa.Column("in_sync", sa.Boolean),
        sa.Column("shallow", sa.Boolean),
        sa.Column("has_stash", sa.Boolean),
        sa.Column("last_fetch_at", TS),
    ]


# attributes keys that became columns, per source kind: column -> keys tried in order
_MOVED = {
    "archived": ("archived",),
    "fork": ("fork",),
    "visibility": ("visibility",),
    "description": ("description",),
    "topics": ("topics",),
    "language": ("language",),
    "stars": ("star_count", "stars_count"),
    "created_at": ("created_at",),
}
_ACTIVITY = {"github": "pushed_at", "gitlab": "last_activity_at", "gitea": "updated_at"}
# keys dropped from attributes (the new code does not write them; activity keys of GitHub and
# Gitea stay, as the new code keeps them)
_DROP = {
    "github": {"archived", "fork", "visibility", "description", "topics", "language"},
    "gitea": {
        "archived",
        "fork",
        "visibility",
        "description",
        "topics",
        "language",
        "stars_count",
        "created_at",
    },
    "gitlab": {
        "archived",
        "fork",
        "visibility",
        "description",
        "topics",
        "star_count",
        "created_at",
        "last_activity_at",
    },
}


def _timestamp(value: Any, dialect: str) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed.replace(tzinfo=None) if dialect == "sqlite" else parsed


def _code_host_values(kind: str, attrs: dict[str, Any], dialect: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column, keys in _MOVED.items():
        value = next((attrs[k] for k in keys if attrs.get(k) is not None), None)
        if column == "created_at":
            value = _timestamp(value, dialect)
        elif column in ("archived", "fork"):
            value = value if isinstance(value, bool) else None
        elif column == "stars":
            value = value if isinstance(value, int) and not isinstance(value, bool) else None
        elif column == "topics":
            value = [str(x) for x in value] if isinstance(value, list) else None
        elif column in ("description", "language", "visibility"):
            value = value if isinstance(value, str) and value else None
        values[column] = value
    values["last_activity_at"] = _timestamp(attrs.get(_ACTIVITY[kind]), dialect)
    values["attributes"] = {k: v for k, v in attrs.items() if k not in _DROP[kind]}
    return values


def _not_bare(dialect: str) -> str:
    if dialect == "sqlite":
        return "coalesce(json_extract(attributes, '$.bare'), 0) = 0"
    return "coalesce((attributes ->> 'bare')::boolean, false) = false"


def _move(table_name: str, dialect: str) -> None:
    bind = op.get_bind()
    table = sa.table(
        table_name,
        sa.column("project_key", sa.Text),
        sa.column("source_kind", sa.String),
        sa.column("attributes", JSON),
        *[sa.column(c.name, c.type) for c in _columns()],
    )
    keyed = ["project_key"] + (["run_id"] if table_name == "staged_projects" else [])
    for name in keyed[1:]:
        table.append_column(sa.column(name, sa.String))
    # checkouts: the old default_branch was the checked-out branch (bare: HEAD, the default)
    bind.execute(
        sa.text(
            f"UPDATE {table_name} SET current_branch = default_branch, default_branch = NULL "
            f"WHERE source_kind = 'filesystem' AND {_not_bare(dialect)}"
        )
    )
    bind.execute(
        sa.text(
            f"UPDATE {table_name} SET last_activity_at = last_commit_at "
            "WHERE source_kind = 'filesystem'"
        )
    )

    key_cols = [table.c[name] for name in keyed]
    stmt = (
        sa.select(*key_cols, table.c.source_kind, table.c.attributes)
        .where(table.c.source_kind.in_(list(_ACTIVITY)))
        .order_by(*key_cols)
    )
    rows = bind.execute(stmt).all()
    updates = []
    for row in rows:
        attrs = row.attributes if isinstance(row.attributes, dict) else {}
        values = _code_host_values(row.source_kind, attrs, dialect)
        updates.append({**{f"k_{n}": getattr(row, n) for n in keyed}, **values})
    if not updates:
        return
    upd = sa.update(table).where(*[table.c[n] == sa.bindparam(f"k_{n}") for n in keyed])
    upd = upd.values({c: sa.bindparam(c) for c in updates[0] if not c.startswith("k_")})
    for i in range(0, len(updates), BATCH):
        bind.execute(upd, updates[i : i + BATCH])


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table_name in TABLES:
        with op.batch_alter_table(table_name) as batch:
            for column in _columns():
                batch.add_column(column)
        _move(table_name, dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table_name in TABLES:
        op.execute(
            f"UPDATE {table_name} SET default_branch = current_branch "
            f"WHERE source_kind = 'filesystem' AND {_not_bare(dialect)}"
        )
        with op.batch_alter_table(table_name) as batch:
            for column in reversed(_columns()):
                batch.drop_column(column.name)
