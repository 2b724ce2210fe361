"""One cleanup per confirmed flush (issue 21).

- table ``cleanup_claims``: who runs the cleanup of a run (a Dagster run requested by the sensor,
  the CLI's ``run``), claimed under the inventory lock before the cleanup begins; any later
  request for the same run is a no-op that names it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cleanup_claims",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("claimed_by", sa.Text, nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cleanup_claims")
