"""run_state.lease: the database session that holds a run, so a dead holder is seen at once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_state") as batch:
        batch.add_column(sa.Column("lease", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("run_state") as batch:
        batch.drop_column("lease")
