"""One writer per scope, not per inventory (issue 21).

- ``run_state.scopes``: the scope keys the run reads (JSON list); NULL means the whole
  inventory (runs begun before this revision, and callers that do not say).
- the partial unique index ``uq_run_state_one_active`` (one active run per inventory) goes:
  runs over disjoint scope sets may be active at once. ``begin`` and ``resume`` refuse an
  overlapping run under the lock of the ``inventory`` row, whatever launched them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.drop_index("uq_run_state_one_active", table_name="run_state")
    with op.batch_alter_table("run_state") as batch:
        batch.add_column(sa.Column("scopes", JSON))


def downgrade() -> None:
    with op.batch_alter_table("run_state") as batch:
        batch.drop_column("scopes")
    op.create_index(
        "uq_run_state_one_active",
        "run_state",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
