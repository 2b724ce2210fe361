"""Lean writes: no index on the columns a run rewrites, room for heap-only updates, and
staging a partition a run on PostgreSQL.

- ``projects``: drop ``ix_projects_generation`` and ``ix_projects_scope_generation`` (both index
  ``seen_generation``, which every run rewrites on every row it saw), add ``ix_projects_scope``
  (the cleanup's per-scope reads); PostgreSQL: ``fillfactor`` 50, and the table rewritten so
  existing pages get the room too.
- ``staged_projects`` (PostgreSQL): partitioned by ``run_id``, one partition a run, so pruning
  a run's staging drops a table instead of leaving dead rows. Existing rows move into their
  runs' partitions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FILLFACTOR = 50


def _partition(run_id: str) -> str:
    # the same name as enum_pipeline.store.schema.staging_partition (kept here: a migration
    # must not change when the application code does)
    return f"staged_projects_{hashlib.md5(run_id.encode()).hexdigest()[:20]}"


def _staging_columns(conn) -> list[str]:
    return [c["name"] for c in sa.inspect(conn).get_columns("staged_projects")]


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_index("ix_projects_generation")
        batch.drop_index("ix_projects_scope_generation")
        batch.create_index("ix_projects_scope", ["scope_key"])
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE projects SET (fillfactor = {FILLFACTOR})")
    # Rewrite the table so the pages it has get the room too (VACUUM FULL cannot run in the
    # migration's transaction; CLUSTER can, and leaves the rows in key order).
    op.execute("CLUSTER projects USING projects_pkey")
    conn = op.get_bind()
    columns = ", ".join(_staging_columns(conn))
    op.execute("ALTER TABLE staged_projects RENAME TO staged_projects_0004")
    op.execute("ALTER INDEX staged_projects_pkey RENAME TO staged_projects_0004_pkey")
    op.execute(
        "CREATE TABLE staged_projects (LIKE staged_projects_0004 INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS, PRIMARY KEY (run_id, project_key)) PARTITION BY LIST (run_id)"
    )
    run_ids = conn.execute(sa.text("SELECT DISTINCT run_id FROM staged_projects_0004")).scalars()
    for run_id in list(run_ids):
        name = _partition(run_id)
        conn.execute(
            sa.text(
                f'CREATE TABLE "{name}" PARTITION OF staged_projects FOR VALUES IN '
                f"('{run_id.replace(chr(39), chr(39) * 2)}')"
            )
        )
        conn.execute(
            sa.text(
                f'INSERT INTO "{name}" ({columns}) SELECT {columns} FROM staged_projects_0004 '
                "WHERE run_id = :run_id"
            ),
            {"run_id": run_id},
        )
    op.execute("DROP TABLE staged_projects_0004")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        conn = op.get_bind()
        columns = ", ".join(_staging_columns(conn))
        op.execute("ALTER TABLE staged_projects RENAME TO staged_projects_0005")
        op.execute("ALTER INDEX staged_projects_pkey RENAME TO staged_projects_0005_pkey")
        op.execute(
            "CREATE TABLE staged_projects (LIKE staged_projects_0005 INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS)"
        )
        op.execute(
            "ALTER TABLE staged_projects ADD CONSTRAINT staged_projects_pkey "
            "PRIMARY KEY (run_id, project_key)"
        )
        op.execute(
            f"INSERT INTO staged_projects ({columns}) SELECT {columns} FROM staged_projects_0005"
        )
        op.execute("DROP TABLE staged_projects_0005 CASCADE")
        op.execute("ALTER TABLE projects RESET (fillfactor)")
    with op.batch_alter_table("projects") as batch:
        batch.drop_index("ix_projects_scope")
        batch.create_index("ix_projects_scope_generation", ["scope_key", "seen_generation"])
        batch.create_index("ix_projects_generation", ["seen_generation"])
