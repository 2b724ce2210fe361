"""Coverage, identity, bound policy, orphans and the cleanup plan (issue 9).

- ``run_state.policy`` / ``configured_scopes``: the cleanup policy and the configured scope keys
  in force when the run began (its cleanup applies that policy, whoever requests it).
- ``run_scopes.identity`` (was ``fingerprint``), ``coverage``, ``protected_reasons``: what a
  verdict read and could see; ``trusted`` / ``identity_note`` / ``identity_accepted_*``: whether
  the reading is a trusted baseline of its scope, why not, and who accepted a changed identity.
- ``projects.first_seen_generation`` (the guard counts a scope's population before a run),
  ``out_of_coverage_since`` / ``out_of_coverage_reason``, ``orphaned_since`` /
  ``orphan_reason``: rows kept because a run could not have seen them.
- ``removed_projects.reason``; table ``cleanup_entries``: every project a cleanup plan names.

Existing readings get ``trusted`` by walking each scope's history in generation order, as the
store does when a run completes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
IDENTITY_KEYS = ("host", "owner_id", "principal", "real_path", "st_dev")


def upgrade() -> None:
    with op.batch_alter_table("run_state") as batch:
        batch.add_column(sa.Column("policy", JSON))
        batch.add_column(sa.Column("configured_scopes", JSON))
    with op.batch_alter_table("run_scopes") as batch:
        batch.alter_column("fingerprint", new_column_name="identity", existing_type=JSON)
        batch.add_column(sa.Column("coverage", JSON))
        batch.add_column(sa.Column("protected_reasons", JSON))
        batch.add_column(sa.Column("trusted", sa.Boolean))
        batch.add_column(sa.Column("identity_note", sa.Text))
        batch.add_column(sa.Column("identity_accepted_by", sa.Text))
        batch.add_column(sa.Column("identity_accepted_at", TS))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("first_seen_generation", sa.BigInteger))
        batch.add_column(sa.Column("out_of_coverage_since", TS))
        batch.add_column(sa.Column("out_of_coverage_reason", sa.Text))
        batch.add_column(sa.Column("orphaned_since", TS))
        batch.add_column(sa.Column("orphan_reason", sa.Text))
    with op.batch_alter_table("removed_projects") as batch:
        batch.add_column(sa.Column("reason", sa.Text))
    op.create_table(
        "cleanup_entries",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("project_key", sa.Text, primary_key=True),
        sa.Column("scope_key", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint(
            "action IN ('remove', 'mark_missing', 'keep')", name="ck_cleanup_entries_action"
        ),
    )
    _settle_trust()


def _settle_trust() -> None:
    """Mark each completed, complete reading trusted when its identity matches the last trusted
    reading of its scope (or it is the first); every other finished reading untrusted."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT s.run_id, s.scope_key, s.complete, s.identity, r.status "
            "FROM run_scopes s JOIN run_state r ON r.run_id = s.run_id "
            "ORDER BY s.scope_key, r.generation"
        )
    ).all()
    json_type = sa.JSON()
    process = json_type.result_processor(conn.dialect, None)
    baseline: dict[str, tuple[str, dict]] = {}
    for run_id, scope_key, complete, identity, status in rows:
        if status == "active":
            continue
        if isinstance(identity, str) and process is not None:
            identity = process(identity)
        identity = identity or {}
        trusted, note = False, None
        if status != "completed":
            note = f"run {status}"
        elif not complete:
            note = "scope read incompletely"
        else:
            before = baseline.get(scope_key)
            changed = [
                k
                for k in IDENTITY_KEYS
                if before and k in before[1] and k in identity and before[1][k] != identity[k]
            ]
            if changed:
                note = "; ".join(
                    f"{k} was {before[1][k]!r} in run {before[0]}, now {identity[k]!r}"
                    for k in changed
                )
                note = f"scope changed identity: {note}"
            else:
                trusted = True
                baseline[scope_key] = (run_id, identity)
        conn.execute(
            sa.text(
                "UPDATE run_scopes SET trusted = :trusted, identity_note = :note "
                "WHERE run_id = :run_id AND scope_key = :scope_key"
            ),
            {"trusted": trusted, "note": note, "run_id": run_id, "scope_key": scope_key},
        )


def downgrade() -> None:
    op.drop_table("cleanup_entries")
    with op.batch_alter_table("removed_projects") as batch:
        batch.drop_column("reason")
    with op.batch_alter_table("projects") as batch:
        for name in (
            "orphan_reason",
            "orphaned_since",
            "out_of_coverage_reason",
            "out_of_coverage_since",
            "first_seen_generation",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("run_scopes") as batch:
        for name in (
            "identity_accepted_at",
            "identity_accepted_by",
            "identity_note",
            "trusted",
            "protected_reasons",
            "coverage",
        ):
            batch.drop_column(name)
        batch.alter_column("identity", new_column_name="fingerprint", existing_type=JSON)
    with op.batch_alter_table("run_state") as batch:
        batch.drop_column("configured_scopes")
        batch.drop_column("policy")
