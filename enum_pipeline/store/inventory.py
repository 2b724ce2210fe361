"""``InventoryStore``: the run lifecycle of DESIGN.md behind one object.

begin, stage, flush, verify, complete/fail, cleanup, restore. Each method delegates to the
module of its concern (``runs``, ``staging``, ``flush``, ``cleanup``, ``history``, ``reads``),
all sharing one ``StoreContext``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.witness import Witness
from enum_pipeline.store import (
    changes,
    claims,
    cleanup,
    flush,
    history,
    identity,
    orphans,
    reads,
    runs,
    staging,
)
from enum_pipeline.store.context import StoreContext
from enum_pipeline.store.dialect import dialect_for
from enum_pipeline.store.engine import create_inventory_engine, ensure_schema
from enum_pipeline.store.liveness import LOCAL_HOLDERS, LeaseKeeper
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import (
    BlockedPlan,
    CleanupClaim,
    CleanupEntry,
    CleanupRecord,
    CleanupResult,
    FlushResult,
    QuarantinedRecord,
    RemovedProject,
    RunInfo,
    ScopeReading,
    VerifyResult,
    utcnow,
)


class InventoryStore:
    """The inventory database and its run lifecycle. Safe to share between threads."""

    def __init__(self, url: str, *, heartbeat_timeout: timedelta = timedelta(minutes=15)):
        self.url = url
        self.engine: Engine = create_inventory_engine(url)
        dialect = dialect_for(self.engine)
        leases = LeaseKeeper(self.engine, enabled=dialect.has_leases)
        self._ctx = StoreContext(self.engine, dialect, leases, heartbeat_timeout)
        ensure_schema(self.engine)

    @property
    def heartbeat_timeout(self) -> timedelta:
        """How long a silent active run counts as alive."""
        return self._ctx.heartbeat_timeout

    @heartbeat_timeout.setter
    def heartbeat_timeout(self, value: timedelta) -> None:
        self._ctx.heartbeat_timeout = value

    @property
    def dialect(self) -> str:
        """The database's dialect name: ``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Close pooled connections and drop the leases of runs this store holds."""
        self._ctx.leases.release_all()
        self.engine.dispose()

    # ------------------------------------------------------------------ run state machine

    def begin(
        self,
        run_id: str,
        *,
        policy: CleanupPolicy | None = None,
        configured_scopes: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Start run ``run_id`` over ``scopes`` (the scope keys it reads; None: the whole
        inventory) and return its generation, the next of one inventory-wide sequence.

        Refused (``RunActiveError``, naming the run and a shared scope) while an active run
        reads a scope of ``scopes`` (None overlaps everything); runs over disjoint scope sets
        are active at once. An overlapping active run whose holder is provably gone (its
        process on this host gone, or on PostgreSQL its database session) is first marked
        ``failed`` (``abandoned``); so is one whose heartbeat expired, but only when nothing
        else tells of its holder: a live holder always vetoes an old heartbeat
        (``liveness.abandon_reason``).
        ``policy`` (default ``CleanupPolicy()``) is recorded with the run: its cleanup applies it,
        whoever requests it. ``configured_scopes``: the scope keys of the configuration in force
        (None when unknown, e.g. an ad hoc ``--root`` run); rows of other scopes are orphaned.
        """
        return runs.begin(self._ctx, run_id, now, policy, configured_scopes, scopes)

    def heartbeat(self, run_id: str, *, now: datetime | None = None) -> bool:
        """Tell reapers the run is alive; on PostgreSQL, take the lease again if its session
        was lost while the run is still ours (``RunActiveError`` if another session took it).
        Returns False once the run is no longer active."""
        return runs.heartbeat(self._ctx, run_id, now)

    def hold_here(self, run_id: str) -> None:
        """Record that a thread of this process keeps ``run_id`` alive (see ``LocalHolders``)."""
        LOCAL_HOLDERS.add(self._ctx.inventory_key, run_id)

    def release_here(self, run_id: str) -> None:
        """Undo ``hold_here``."""
        LOCAL_HOLDERS.discard(self._ctx.inventory_key, run_id)

    def held_here(self, run_id: str) -> bool:
        """True while a thread of this process keeps ``run_id`` alive."""
        return LOCAL_HOLDERS.holds(self._ctx.inventory_key, run_id)

    def resume(self, run_id: str, attempt_run_id: str) -> int:
        """Re-activate a failed run whose scan is staged, so a re-execution can finish its flush.

        Allowed only while no run over a scope of it is active and none has begun after it, so
        a re-execution can never write over a newer run's view of its scopes; a run still
        ``active`` is taken over only when its holder's lease is ours or free. Returns the
        run's generation.
        """
        return runs.resume(self._ctx, run_id, attempt_run_id)

    def complete(self, run_id: str) -> str:
        """End the run: ``completed`` iff its flush was verified, else ``failed``."""
        return runs.complete(self._ctx, run_id)

    def fail(self, run_id: str, reason: str) -> bool:
        """Mark an ``active`` run ``failed``. Returns False when it was not active (no change)."""
        return runs.fail(self._ctx, run_id, reason)

    def fail_attempt(self, attempt_run_id: str, reason: str) -> list[str]:
        """Mark failed the active run whose current attempt is Dagster run ``attempt_run_id``."""
        return runs.fail_attempt(self._ctx, attempt_run_id, reason)

    def reap(
        self,
        *,
        now: datetime | None = None,
        attempt_finished: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Mark ``failed`` (``abandoned``) every active run that provably stopped.

        Stopped: process on this host gone, database session gone (PostgreSQL lease free), a
        heartbeat older than the timeout with no live holder to veto it, or (when
        ``attempt_finished`` is given) the orchestrator says its attempt ended.
        """
        return runs.reap(self._ctx, now, attempt_finished)

    # ------------------------------------------------------------------ staging

    def stage(self, run_id: str, records: Iterable[ProjectRecord]) -> int:
        """Durably stage a batch of records for ``run_id``; returns how many were new.

        A key seen twice in one run (overlapping roots) is kept once, first sighting wins. A
        record the database turns back is isolated (the batch is split until it is alone) and
        quarantined with the database's reason; the rest is staged.
        """
        return staging.stage(self._ctx, run_id, records)

    def end_scope(self, run_id: str, verdict: ScopeVerdict) -> ScopeVerdict:
        """Record how the run ended one scope (complete or not, why, what is protected); returns
        the verdict as recorded: incomplete, naming them, when records of the scope were
        quarantined (nothing under it is then removed)."""
        return staging.end_scope(self._ctx, run_id, verdict)

    def quarantine(self, run_id: str, rejected: Iterable[tuple[ProjectRecord, str]]) -> int:
        """Record records of ``run_id`` the database cannot take, each with its reason: they
        are not staged, they count as scanned, and their scopes are made incomplete. Returns
        how many were recorded."""
        entries = [(r.scope_key, r.project_key, r.source_kind, why) for r, why in rejected]
        return staging.quarantine(self._ctx, run_id, entries)

    def quarantined(self, run_id: str) -> list[QuarantinedRecord]:
        """The records of ``run_id`` that were quarantined, with their reasons."""
        return staging.quarantined(self._ctx, run_id)

    def prune_staging(self, keep_runs: int = 3) -> int:
        """Drop the staging of finished runs, keeping the newest ``keep_runs`` runs and the two
        newest completed ones; returns the rows dropped (PostgreSQL drops whole partitions)."""
        return staging.prune_staging(self._ctx, keep_runs)

    def staged_rows(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The rows run ``run_id`` staged, in key order, streamed (none once pruned)."""
        return staging.staged_rows(self._ctx, run_id)

    # ------------------------------------------------------------------ flush / verify

    def flush(self, run_id: str) -> FlushResult:
        """Upsert the run's staged records into ``projects`` and confirm them, in one statement.

        A row last seen by a newer generation is never overwritten (fencing). When the upsert
        wrote fewer rows than were staged, nothing is kept (``FlushVerificationError``).
        """
        return flush.flush(self._ctx, run_id)

    def verify_and_confirm(self, run_id: str) -> VerifyResult:
        """Prove the flush: every staged key is in ``projects`` with this run's generation,
        content and confirmation, and no other row has the generation.

        Only then set ``flush_succeeded`` on the run (no project row is written: the flush
        confirmed them in the transaction that wrote them). Raises ``FlushVerificationError``
        otherwise.
        """
        return flush.verify_and_confirm(self._ctx, run_id)

    # ------------------------------------------------------------------ cleanup / history

    def approve_cleanup(
        self, run_id: str, approved_by: str, plan_id: str | None = None
    ) -> dict[str, Any]:
        """Approve the blocked cleanup of ``run_id``: exactly the removals its plan listed (a
        later plan with more removals is blocked again). With ``plan_id`` only while that is
        the run's blocked plan (``PlanChangedError`` naming both otherwise)."""
        return cleanup.approve_cleanup(self._ctx, run_id, approved_by, plan_id)

    def blocked_plan(self, run_id: str) -> BlockedPlan | None:
        """The blocked plan of ``run_id`` (its id, how many it would remove, why), or None."""
        return claims.blocked_plan(self._ctx, run_id)

    def cleanup_claim(self, run_id: str) -> CleanupClaim | None:
        """Who claimed the cleanup of ``run_id``'s flush, if anyone (one cleanup per flush)."""
        return claims.cleanup_claim(self._ctx, run_id)

    def safe_cleanup_old_projects(
        self,
        run_id: str,
        policy: CleanupPolicy | None = None,
        *,
        dry_run: bool = False,
        approved_by: str | None = None,
        witness: Witness | None = None,
        claimant: str | None = None,
    ) -> CleanupResult:
        """Remove the projects a completed, verified run did not see and whose absence a
        witness confirmed, in one transaction.

        The cleanup is a plan (``CleanupResult.entries``: every project it touches, with its
        action and reason), then its application. Only scopes the run read completely, whose
        reading is trusted (identity unchanged or accepted) and that no newer completed run read,
        are considered; a row is a candidate only if its ``seen_generation`` is strictly older
        than the run's (NULL never deletes), no newer run staged it, it is not under a protected
        location and the run's coverage could have seen it (else it is kept and marked *out of
        coverage*); rows of scopes the run's configuration no longer names are kept and marked
        *orphaned*. The policy is the one recorded at ``begin``; ``policy`` applies only to runs
        begun without one (before migration 0004) and can never loosen a recorded one. The
        deletion guard may hold the whole cleanup back (``blocked``); ``approved_by`` (or
        ``approve_cleanup``) releases exactly the plan's listed removals. Removed rows go to
        ``removed_projects``. Running it twice changes nothing.

        **Absence is confirmed, never inferred**: a row due for removal is removed only when
        ``witness`` (``sources.witness.SourceWitness`` of the configuration: the source that
        owns the row's scope looks at the project directly) answered ``gone`` after the run's
        read; found rows are kept (refreshed from the answer), anything else is kept marked
        missing with the reason. Without a witness nothing is removed.

        **One cleanup per flush**: with ``claimant`` (who asks: a Dagster run, the CLI) the
        cleanup claims the run's flush first, under the inventory lock; a request that finds it
        claimed by another does nothing and its result's ``claimed_by`` names that one.
        """
        return cleanup.safe_cleanup_old_projects(
            self._ctx, run_id, policy, dry_run, approved_by, witness, claimant
        )

    def cleanup_record(self, run_id: str) -> CleanupRecord | None:
        """The recorded cleanup of ``run_id``, if any."""
        return cleanup.cleanup_record(self._ctx, run_id)

    def cleanup_entries(self, run_id: str) -> list[CleanupEntry]:
        """The persisted plan of the cleanup of ``run_id`` (or of a prune id): removals first."""
        return cleanup.cleanup_entries(self._ctx, run_id)

    def accept_scope_identity(
        self, scope_key: str, run_id: str | None = None, *, accepted_by: str = "operator"
    ) -> dict[str, Any]:
        """Accept a changed identity of ``scope_key``: the reading of ``run_id`` (default: the
        newest completed run that read the scope completely) becomes its trusted baseline,
        recorded with ``accepted_by``. Later runs with that identity clean the scope again."""
        with self.engine.begin() as conn:
            self._ctx.lock_inventory(conn)
            return identity.accept_scope_identity(conn, scope_key, run_id, accepted_by, utcnow())

    def prune_orphans(
        self,
        *,
        dry_run: bool = False,
        approved_by: str | None = None,
        scope_key: str | None = None,
    ) -> CleanupResult:
        """Remove the rows marked orphaned or out of coverage (of ``scope_key``, or all) into
        history, under the deletion guard of the newest completed run's policy (``approved_by``
        overrides it). ``CleanupResult.run_id`` is the prune's id: ``restore`` takes it."""
        with self.engine.begin() as conn:
            last = self._ctx.lock_inventory(conn)
            result = orphans.prune_orphans(
                conn, last, dry_run=dry_run, approved_by=approved_by, scope_key=scope_key
            )
            if dry_run:
                conn.rollback()
        return result

    def kept_projects(self, scope_key: str | None = None) -> list[dict[str, Any]]:
        """Rows kept because a run could not have seen them: marked orphaned (with
        ``orphaned_since`` / ``orphan_reason``) or out of coverage (``out_of_coverage_since`` /
        ``out_of_coverage_reason``)."""
        with self.engine.connect() as conn:
            return orphans.kept_rows(conn, scope_key)

    def history(self, run_id: str | None = None) -> list[RemovedProject]:
        """Removed projects (optionally those one cleanup removed), newest first."""
        return history.history(self._ctx, run_id)

    def restore(self, cleanup_run_id: str, restored_by: str = "operator") -> list[str]:
        """Bring back every project the cleanup of ``cleanup_run_id`` removed and that is absent.

        Returns the restored keys. Running it again restores nothing more.
        """
        return history.restore(self._ctx, cleanup_run_id, restored_by)

    # ------------------------------------------------------------------ reads

    def get_run(self, run_id: str) -> RunInfo:
        """The ``run_state`` row of ``run_id``."""
        return reads.get_run(self._ctx, run_id)

    def runs(self, limit: int = 50) -> list[RunInfo]:
        """The newest runs first."""
        return reads.runs(self._ctx, limit)

    def resolve_run_id(self, given: str, *, removals: bool = False) -> str:
        """The run id ``given`` names: an exact run id, or a unique prefix of one (4 characters
        or more); with ``removals`` also the id of a cleanup or prune that removed projects
        (``restore``'s targets). ``AmbiguousRunError`` or ``UnknownRunError`` otherwise, each
        one sentence naming the candidates or the newest runs."""
        return reads.resolve_run_id(self._ctx, given, removals=removals)

    def active_run(self) -> RunInfo | None:
        """The oldest active run, if any."""
        return reads.active_run(self._ctx)

    def active_runs(self) -> list[RunInfo]:
        """The active runs (several when their scope sets are disjoint), oldest first."""
        return reads.active_runs(self._ctx)

    def scopes(self, run_id: str) -> list[ScopeReading]:
        """The scope verdicts a run recorded."""
        return reads.scopes(self._ctx, run_id)

    def scope_readings(self, scope_key: str, limit: int = 20) -> list[ScopeReading]:
        """The newest ``limit`` readings of one scope by completed runs, newest first."""
        return reads.scope_readings(self._ctx, scope_key, limit)

    def latest_scope_readings(self) -> dict[str, ScopeReading]:
        """Every scope's newest reading by a completed run, by scope key."""
        return reads.latest_scope_readings(self._ctx)

    def project_keys(self, scope_key: str | None = None) -> set[str]:
        """Keys of the projects in the inventory (optionally of one scope)."""
        return reads.project_keys(self._ctx, scope_key)

    def projects(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``projects``, ordered by key."""
        return reads.projects(self._ctx, limit)

    def count_projects(self) -> int:
        """How many projects the inventory holds."""
        return reads.count_projects(self._ctx)

    # ------------------------------------------------------------------ operator views

    def run_changes(self, run_id: str) -> list[changes.ProjectChange]:
        """What run ``run_id`` added, changed (which columns) and removed, by project."""
        return changes.run_changes(self._ctx, run_id)

    def holder(self, scopes: Iterable[str] | None = None) -> changes.Holder | None:
        """The active run a new run over ``scopes`` (None: the whole inventory) would meet,
        preferring one that holds on: the run, why a new run would take it over (None: it
        holds on), and the scope they share."""
        return changes.holder(self._ctx, scopes)

    def restorable_cleanups(self, names: int = 5) -> list[changes.Restorable]:
        """Cleanups whose removed projects are not all restored, newest first."""
        return changes.restorable_cleanups(self._ctx, names)

    def blocked_cleanups(self, runs: int = 50) -> list[str]:
        """The runs whose cleanup is blocked among the newest ``runs`` runs, newest first."""
        return changes.blocked_cleanups(self._ctx, runs)

    def scope_summary(self) -> list[dict[str, Any]]:
        """Per scope: total, missing, out of coverage, incomplete newest read."""
        return changes.scope_summary(self._ctx)


def open_store(url: str | None = None, **kwargs: Any) -> InventoryStore:
    """An ``InventoryStore`` on ``url`` (default: ``ENUM_PIPELINE_DATABASE_URL`` or SQLite)."""
    from enum_pipeline.store.engine import default_database_url

    return InventoryStore(url or default_database_url(), **kwargs)
