"""The inventory's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# Python None is SQL NULL ("not known"), never a JSON null
NullableJSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

RUN_STATUSES = ("active", "completed", "failed")
CLEANUP_STATUSES = ("done", "blocked", "noop")
CLEANUP_ACTIONS = ("remove", "mark_missing", "keep")


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive strings)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _project_columns(digest: bool = True) -> list[sa.Column]:
    """Columns a source fills, shared by ``projects``, ``staged_projects``.

    Their names are the ``ProjectRecord`` field names, so a row is the record's fields in this
    order. NULL means "this source does not know" (see ``sources/fields.py``). ``projects`` also
    holds ``content_hash``, the digest of the others (``HASHED_COLUMNS``) that the flush
    computes in SQL (``dialect.digest``); staging holds none (migration 0006).
    """
    digest_column = [sa.Column("content_hash", sa.String(64), nullable=False)] if digest else []
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
        sa.Column("last_commit_at", UTCDateTime()),
        sa.Column("markers", JSONType),
        sa.Column("attributes", JSONType),
        *digest_column,
        *product_columns(),
    ]


def product_columns() -> list[sa.Column]:
    """What the inventory answers questions with (migration 0003): code-host facts and the
    cheap state of a checkout."""
    return [
        sa.Column("archived", sa.Boolean),
        sa.Column("fork", sa.Boolean),
        sa.Column("visibility", sa.String(16)),
        sa.Column("description", sa.Text),
        sa.Column("topics", NullableJSON),
        sa.Column("language", sa.Text),
        sa.Column("license", sa.Text),
        sa.Column("stars", sa.BigInteger),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("last_activity_at", UTCDateTime()),
        sa.Column("current_branch", sa.Text),
        sa.Column("remotes", NullableJSON),
        sa.Column("upstream", sa.Text),
        sa.Column("in_sync", sa.Boolean),
        sa.Column("shallow", sa.Boolean),
        sa.Column("has_stash", sa.Boolean),
        sa.Column("last_fetch_at", UTCDateTime()),
    ]


PROJECT_DATA_COLUMNS = [c.name for c in _project_columns()]
#: What ``content_hash`` digests: every column a source fills but the key.
HASHED_COLUMNS = [c.name for c in _project_columns(digest=False)]
PRODUCT_COLUMNS = [c.name for c in product_columns()]

#: PostgreSQL fill factor of ``projects``: every run rewrites each row it saw once (its seen
#: generation, confirmation, last-seen time), so each page keeps room for a second version of
#: every row on it and the update is heap-only (HOT): no index entry, and the page prunes the
#: previous run's versions itself, without VACUUM (see docs/DEPLOYMENT.md).
PROJECTS_FILLFACTOR = 50


def _count(name: str) -> sa.Column:
    """A counter column: a non-null BIGINT that starts at 0."""
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def _run_table(name: str, *columns, **kwargs) -> sa.Table:
    """A table whose key starts with the run (``run_id``)."""
    return sa.Table(
        name, metadata, sa.Column("run_id", sa.String(64), primary_key=True), *columns, **kwargs
    )


# One row: the generation counter, and the row every writer locks to serialise begin/cleanup.
inventory = sa.Table(
    "inventory",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _count("last_generation"),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("project_key", sa.Text, primary_key=True),
    *_project_columns(),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("seen_generation", sa.BigInteger),
    sa.Column("last_confirmed_run_id", sa.String(64)),
    sa.Column("confirmed_generation", sa.BigInteger),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("changed_at", UTCDateTime(), nullable=False),
    sa.Column("missing_since", UTCDateTime()),
    sa.Column("missed_runs", sa.Integer, nullable=False, server_default="0"),
    # The generation whose flush inserted the row (NULL: before 0004); the deletion guard counts
    # a scope's population before a run from it.
    sa.Column("first_seen_generation", sa.BigInteger),
    # Kept because a run's coverage could not have seen it (narrowed settings, visibility…).
    sa.Column("out_of_coverage_since", UTCDateTime()),
    sa.Column("out_of_coverage_reason", sa.Text),
    # Kept because no configured scope reads it any more; removed only by prune_orphans.
    sa.Column("orphaned_since", UTCDateTime()),
    sa.Column("orphan_reason", sa.Text),
    # No index on a column a run rewrites (seen_generation, run_id, confirmation, times): an
    # index on one would make every run's update of every row a non-HOT one (migration 0005).
    sa.Index("ix_projects_scope", "scope_key"),
    postgresql_with={"fillfactor": PROJECTS_FILLFACTOR},
)

run_state = _run_table(
    "run_state",
    sa.Column("generation", sa.BigInteger, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("flush_succeeded", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("attempt_run_id", sa.String(64)),
    sa.Column("host", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_start", sa.BigInteger),
    # PostgreSQL: the session-level advisory lock ("pg_advisory:SPACE:GENERATION") the holder
    # keeps while the run is active; when it is free, the holder's session is gone.
    sa.Column("lease", sa.Text),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    _count("scanned_count"),
    _count("staged_count"),
    _count("flushed_count"),
    _count("confirmed_count"),
    _count("added_count"),
    _count("changed_count"),
    _count("unchanged_count"),
    _count("removed_count"),
    sa.Column("error", sa.Text),
    # The cleanup policy in force at begin (its cleanup applies it, whoever requests it) and the
    # scope keys configured then (None: unknown, e.g. an ad hoc --root run).
    sa.Column("policy", JSONType),
    sa.Column("configured_scopes", JSONType),
    # The scope keys the run reads (migration 0008); NULL: the whole inventory. I4: no two
    # active runs' scopes overlap, checked by begin and resume under the inventory lock.
    sa.Column("scopes", JSONType),
    sa.CheckConstraint(f"status IN {RUN_STATUSES!r}", name="ck_run_state_status"),
)

run_scopes = _run_table(
    "run_scopes",
    sa.Column("scope_key", sa.Text, primary_key=True),
    sa.Column("source_kind", sa.String(32), nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("protected", JSONType),
    _count("seen_count"),
    # What was read (a root's real path and device; a code-host owner's id and principal).
    sa.Column("identity", JSONType),
    sa.Column("ended_at", UTCDateTime(), nullable=False),
    sa.Column("coverage", JSONType),
    sa.Column("protected_reasons", JSONType),
    # Settled when the run ends: a completed, complete reading whose identity matches the last
    # trusted reading of the scope (or was accepted) is the scope's new baseline.
    sa.Column("trusted", sa.Boolean),
    sa.Column("identity_note", sa.Text),
    sa.Column("identity_accepted_by", sa.Text),
    sa.Column("identity_accepted_at", UTCDateTime()),
    sa.Index("ix_run_scopes_scope", "scope_key"),
)

# PostgreSQL: one partition a run (``staging_partition``), dropped whole when the run's staging
# is pruned, so old staging leaves no dead rows behind. SQLite frees deleted rows' pages itself.
staged_projects = _run_table(
    "staged_projects",
    sa.Column("project_key", sa.Text, primary_key=True),
    *_project_columns(digest=False),
    postgresql_partition_by="LIST (run_id)",
)


def staging_partition(run_id: str) -> str:
    """The name of the PostgreSQL partition of ``staged_projects`` that holds ``run_id``."""
    return f"staged_projects_{hashlib.md5(run_id.encode()).hexdigest()[:20]}"


removed_projects = sa.Table(
    "removed_projects",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("project_key", sa.Text, nullable=False),
    sa.Column("scope_key", sa.Text, nullable=False),
    sa.Column("removed_by_run_id", sa.String(64), nullable=False),
    sa.Column("removed_at", UTCDateTime(), nullable=False),
    sa.Column("row", JSONType, nullable=False),
    sa.Column("restored_at", UTCDateTime()),
    sa.Column("restored_by", sa.Text),
    sa.Column("reason", sa.Text),
    # the witness's answer that confirmed the project gone, and when it was taken
    sa.Column("confirmation", sa.Text),
    sa.Column("confirmed_at", UTCDateTime()),
    sa.Index("ix_removed_projects_run", "removed_by_run_id"),
    sa.Index("ix_removed_projects_key", "project_key"),
)

cleanups = _run_table(
    "cleanups",
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    _count("candidates"),
    _count("removed"),
    _count("marked_missing"),
    sa.Column("reason", sa.Text),
    sa.Column("details", JSONType),
    sa.Column("approved_by", sa.Text),
    sa.Column("approved_max", sa.BigInteger),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(f"status IN {CLEANUP_STATUSES!r}", name="ck_cleanups_status"),
)

# Who runs the cleanup of a run's confirmed flush: one row per run, inserted under the inventory
# lock before the cleanup looks at anything, so two requesters never both clean up one flush.
cleanup_claims = _run_table(
    "cleanup_claims",
    sa.Column("claimed_by", sa.Text, nullable=False),
    sa.Column("claimed_at", UTCDateTime(), nullable=False),
)

# The persisted cleanup plan: every project a cleanup (or an orphan prune) names, with its action
# and reason. ``approved``: the entry was in the plan an operator approved.
cleanup_entries = _run_table(
    "cleanup_entries",
    sa.Column("project_key", sa.Text, primary_key=True),
    sa.Column("scope_key", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("approved", sa.Boolean, nullable=False, server_default=sa.false()),
    # what the source's witness said of the project (absence confirmed, or why it is kept)
    sa.Column("confirmation", sa.Text),
    sa.CheckConstraint(f"action IN {CLEANUP_ACTIONS!r}", name="ck_cleanup_entries_action"),
)

# Records of a run the database could not take (a key over the index limit, a NUL, a number out
# of range), with the reason; their scope is made incomplete so nothing under it is removed.
quarantined_records = sa.Table(
    "quarantined_records",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("scope_key", sa.Text, nullable=False),
    sa.Column("project_key", sa.Text, nullable=False),
    sa.Column("source_kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("quarantined_at", UTCDateTime(), nullable=False),
    sa.Index("ix_quarantined_records_run", "run_id"),
)
