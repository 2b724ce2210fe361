"""Confirmed absence and quarantined records (issue 19).

- ``removed_projects.confirmation`` / ``confirmed_at``: the witness's answer that confirmed a
  removed project gone ("path absent on device …", "not found: GET …"), and when it was taken.
- ``cleanup_entries.confirmation``: the same for every project a cleanup plan names (what the
  witness said, whether it confirmed the absence or kept the row).
- table ``quarantined_records``: records of a run the database could not take, with the reason;
  their scope is incomplete, every other record goes on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("removed_projects") as batch:
        batch.add_column(sa.Column("confirmation", sa.Text))
        batch.add_column(sa.Column("confirmed_at", TS))
    with op.batch_alter_table("cleanup_entries") as batch:
        batch.add_column(sa.Column("confirmation", sa.Text))
    op.create_table(
        "quarantined_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("scope_key", sa.Text, nullable=False),
        sa.Column("project_key", sa.Text, nullable=False),
        sa.Column("source_kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("quarantined_at", TS, nullable=False),
    )
    op.create_index("ix_quarantined_records_run", "quarantined_records", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_records_run", table_name="quarantined_records")
    op.drop_table("quarantined_records")
    with op.batch_alter_table("cleanup_entries") as batch:
        batch.drop_column("confirmation")
    with op.batch_alter_table("removed_projects") as batch:
        batch.drop_column("confirmed_at")
        batch.drop_column("confirmation")
