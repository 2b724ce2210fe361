"""Statuses and the typed results the store hands back.

Statuses leave the store as plain ``str`` values (``RunInfo.status``, ``CleanupResult.status``,
``complete()``): Dagster's serialiser refuses Enum members it has not whitelisted, and callers put
these values in metadata. ``RunStatus`` / ``CleanupStatus`` compare equal to those strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """``run_state.status``."""

    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


class CleanupStatus(StrEnum):
    """``cleanups.status`` and ``CleanupResult.status``."""

    DONE = "done"
    BLOCKED = "blocked"
    NOOP = "noop"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class _Row:
    """A record read from one table row: its fields are the row's columns."""

    @classmethod
    def from_row(cls, row):
        """The record of a row (a mapping with at least the record's fields)."""
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The row as plain data (field order is the table's column order)."""
        return asdict(self)


@dataclass(frozen=True)
class RunInfo(_Row):
    """One ``run_state`` row."""

    run_id: str
    generation: int
    status: str
    flush_succeeded: bool
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    scanned_count: int
    staged_count: int
    flushed_count: int
    confirmed_count: int
    added_count: int
    changed_count: int
    unchanged_count: int
    removed_count: int
    error: str | None
    attempt_run_id: str | None
    host: str | None
    pid: int | None
    lease: str | None = None
    #: The cleanup policy recorded at begin (JSON), and the scope keys configured then.
    policy: dict[str, Any] | None = None
    configured_scopes: list[str] | None = None
    #: The scope keys the run reads; None: the whole inventory.
    scopes: list[str] | None = None


@dataclass(frozen=True)
class QuarantinedRecord(_Row):
    """One ``quarantined_records`` row: a record of a run the database could not take, and why
    (``project_key`` and ``scope_key`` as stored: escaped and cut, see ``safe_text``)."""

    id: int
    run_id: str
    scope_key: str
    project_key: str
    source_kind: str
    reason: str
    quarantined_at: datetime


@dataclass(frozen=True)
class ScopeReading(_Row):
    """One ``run_scopes`` row: how a run ended one scope (``InventoryStore.scopes``)."""

    run_id: str
    scope_key: str
    source_kind: str
    complete: bool
    reason: str | None
    #: Locations under the scope that no cleanup removes from, and why.
    protected: list[str] | None
    seen_count: int
    #: What was read (a root's real path and device; a code host owner's id and principal).
    identity: dict[str, Any] | None
    ended_at: datetime
    coverage: dict[str, Any] | None
    protected_reasons: dict[str, str] | None
    #: Settled when the run ends: this reading is the scope's trusted baseline.
    trusted: bool | None
    identity_note: str | None
    identity_accepted_by: str | None
    identity_accepted_at: datetime | None


@dataclass(frozen=True)
class RemovedProject(_Row):
    """One ``removed_projects`` row: a project a cleanup or prune removed (``history``)."""

    id: int
    project_key: str
    scope_key: str
    #: The cleanup's run, or the prune's id: what ``restore`` takes.
    removed_by_run_id: str
    removed_at: datetime
    #: The ``projects`` row as it was, as JSON (timestamps in ISO form).
    row: dict[str, Any]
    restored_at: datetime | None
    restored_by: str | None
    reason: str | None
    #: the witness's answer that confirmed the project gone, and when it was taken
    confirmation: str | None
    confirmed_at: datetime | None


@dataclass(frozen=True)
class CleanupRecord(_Row):
    """One ``cleanups`` row: the recorded cleanup of a run (``cleanup_record``); ``status`` is a
    ``CleanupStatus`` value."""

    run_id: str
    generation: int
    status: str
    candidates: int
    removed: int
    marked_missing: int
    reason: str | None
    #: Per scope counts, and what the plan would remove, kept out of coverage, orphaned, held.
    details: dict[str, Any] | None
    approved_by: str | None
    approved_max: int | None
    updated_at: datetime


@dataclass(frozen=True)
class CleanupClaim(_Row):
    """One ``cleanup_claims`` row: who runs the cleanup of the run's confirmed flush."""

    run_id: str
    claimed_by: str
    claimed_at: datetime


@dataclass(frozen=True)
class BlockedPlan:
    """A cleanup the deletion guard held back, as an operator approves it: ``plan_id`` is a
    digest of the run and the keys it would remove, so an approval names exactly this plan."""

    run_id: str
    plan_id: str
    would_remove: int
    reason: str | None


@dataclass(frozen=True)
class FlushResult:
    """Counts of one set-based upsert."""

    run_id: str
    generation: int
    staged: int
    added: int
    changed: int
    unchanged: int
    #: staged keys left as they are because a newer run (over another scope, e.g. a
    #: repository transferred between owners) wrote them first; counted as unchanged
    superseded: int = 0

    def run_counts(self) -> dict[str, int]:
        """The ``run_state`` counters this flush sets."""
        return {
            f"{column}_count": getattr(self, name)
            for column, name in (
                ("flushed", "staged"),
                ("added", "added"),
                ("changed", "changed"),
                ("unchanged", "unchanged"),
            )
        }


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify_and_confirm`` proved."""

    run_id: str
    generation: int
    staged: int
    present: int
    confirmed: int
    flush_succeeded: bool
    #: staged keys a newer run saw and confirmed since (fenced: they carry its values)
    superseded: int = 0


@dataclass
class ScopeCleanup:
    """The cleanup's view of one scope. ``total`` is its population before the run; the other
    counts are of projects the run did not see, each named in ``CleanupResult.entries``."""

    scope_key: str
    complete: bool
    total: int = 0
    "Rows the scope held before the run."
    candidates: int = 0
    "Unseen, inside the read's coverage and unprotected: missing or due for removal."
    marked_missing: int = 0
    removed: int = 0
    protected: int = 0
    "Kept: under a location the read did not enter, or the whole scope held back."
    out_of_coverage: int = 0
    "Kept: outside what the read was configured to see (depth, nested, filters)."
    skipped_reason: str | None = None
    blocked_reason: str | None = None


class CleanupAction(StrEnum):
    """What a cleanup plan does with one project."""

    REMOVE = "remove"
    MARK_MISSING = "mark_missing"
    KEEP = "keep"


@dataclass(frozen=True)
class CleanupEntry:
    """One project a cleanup plan names: what it does with it (a ``CleanupAction`` value) and
    why (e.g. ``protected: /srv/src/mnt (foreign mount)``, ``out of coverage: …``, ``held: …``,
    ``orphan: …``, ``not seen by run …``)."""

    project_key: str
    name: str
    scope_key: str
    location: str
    action: str
    reason: str
    #: what the source's witness said of it (absence confirmed, or why the row is kept)
    confirmation: str | None = None


@dataclass
class CleanupResult:
    """Outcome of ``safe_cleanup_old_projects`` or ``prune_orphans`` (``status``: a
    ``CleanupStatus`` value).

    ``removed`` and ``marked_missing`` count only what was done (0 when blocked or a dry run);
    ``would_remove`` is what the plan removes, or would if it were not held back. Kept:
    ``kept_incomplete`` (scope read incompletely, superseded, or a protected location),
    ``out_of_coverage``, ``orphaned``, ``held`` (the scope's identity changed). ``entries``
    names every project the plan touches. ``unconfirmed``: due for removal, but no witness
    confirmed the absence (kept, marked missing); ``found_present``: a witness found them.
    """

    run_id: str
    generation: int
    status: str
    candidates: int = 0
    removed: int = 0
    marked_missing: int = 0
    kept_incomplete: int = 0
    reason: str | None = None
    dry_run: bool = False
    already_done: bool = False
    scopes: list[ScopeCleanup] = field(default_factory=list)
    removed_keys: list[str] = field(default_factory=list)
    would_remove: int = 0
    out_of_coverage: int = 0
    orphaned: int = 0
    held: int = 0
    unconfirmed: int = 0
    found_present: int = 0
    entries: list[CleanupEntry] = field(default_factory=list)
    #: A blocked cleanup's plan, as ``approve_cleanup`` must name it (``BlockedPlan.plan_id``).
    plan_id: str | None = None
    #: Who claimed this flush's cleanup (``cleanup_claims``); set on every cleanup that claims.
    claimed_by: str | None = None

    def as_dict(self, max_entries: int | None = 1000) -> dict[str, Any]:
        """Plain data, for metadata and JSON: at most ``max_entries`` entries (removals
        first), their total in ``entries_total``."""
        entries = self.entries
        data = asdict(replace(self, entries=[], removed_keys=[]))
        data.pop("removed_keys")
        order = {"remove": 0, "mark_missing": 1}
        ranked = sorted(entries, key=lambda e: (order.get(e.action, 2), e.project_key))
        data["entries"] = [asdict(e) for e in ranked[:max_entries]]
        data["entries_total"] = len(entries)
        return data
