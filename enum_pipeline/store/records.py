"""Statuses and the typed results the store hands back.

Statuses leave the store as plain ``str`` values (``RunInfo.status``, ``CleanupResult.status``,
``complete()``): Dagster's serialiser refuses Enum members it has not whitelisted, and callers put
these values in metadata. ``RunStatus`` / ``CleanupStatus`` compare equal to those strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class RunInfo:
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

    @classmethod
    def from_row(cls, row) -> RunInfo:
        """The record of a ``run_state`` row (a mapping)."""
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class FlushResult:
    """Counts of one set-based upsert."""

    run_id: str
    generation: int
    staged: int
    added: int
    changed: int
    unchanged: int


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify_and_confirm`` proved."""

    run_id: str
    generation: int
    staged: int
    present: int
    confirmed: int
    flush_succeeded: bool


@dataclass
class ScopeCleanup:
    """The cleanup's view of one scope."""

    scope_key: str
    complete: bool
    total: int = 0
    candidates: int = 0
    marked_missing: int = 0
    removed: int = 0
    protected: int = 0
    skipped_reason: str | None = None
    blocked_reason: str | None = None


@dataclass
class CleanupResult:
    """Outcome of ``safe_cleanup_old_projects`` (``status``: a ``CleanupStatus`` value)."""

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

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for metadata and JSON."""
        data = asdict(self)
        data.pop("removed_keys")
        return data
