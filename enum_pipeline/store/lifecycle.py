"""The run lifecycle of DESIGN.md: begin, stage, flush, verify, complete/fail, cleanup, restore.

Every function here is a short transaction of its own; nothing holds a transaction across the
scan. Writers that must not interleave (``begin``, ``safe_cleanup_old_projects``, ``restore``)
first lock the single ``inventory`` row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` write lock), and the partial unique index on ``run_state(status)`` keeps a
second ``active`` run out whatever launched it.

On PostgreSQL the process that holds a run also holds a session-level advisory lock, its
*lease*, on a connection of its own for as long as the run is active. The server releases it
the moment that session ends (process killed, host gone, connection terminated), so a new run
or the reaper knows at once, from any machine, that the holder is dead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.store import schema as t
from enum_pipeline.store.engine import create_inventory_engine, ensure_schema
from enum_pipeline.store.policy import CleanupPolicy

HISTORY_BATCH = 2000
_STAGE_COLUMNS = ["run_id", "project_key", *t.PROJECT_DATA_COLUMNS]
_MARKERS_AT = _STAGE_COLUMNS.index("markers")
_ATTRIBUTES_AT = _STAGE_COLUMNS.index("attributes")


class StoreError(Exception):
    """Base class of the store's refusals."""


class RunActiveError(StoreError):
    """Another run holds the inventory."""

    def __init__(self, run_id: str, detail: str):
        super().__init__(f"run {run_id} is active ({detail}); refusing to start another run")
        self.run_id = run_id


class UnknownRunError(StoreError):
    """No ``run_state`` row for that run id."""


class RunNotActiveError(StoreError):
    """The run is not ``active``; it cannot stage or flush."""


class FlushVerificationError(StoreError):
    """What the run staged is not what ``projects`` holds after the flush."""


class CleanupRefusedError(StoreError):
    """The run is not a completed, flush-verified run."""


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
    """Outcome of ``safe_cleanup_old_projects`` (``status``: done, blocked, noop)."""

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


def _process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat.rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _process_state(pid: int) -> str | None:
    """State letter of a process from /proc (Linux): R, S, D, Z (zombie), X (dead), …"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def holder_is_dead(host: str | None, pid: int | None, pid_start: int | None) -> bool:
    """True when the run's process provably ended: same host, and that pid is gone or reused."""
    if host != socket.gethostname() or not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return _process_state(pid) in ("Z", "X")
    if _process_state(pid) in ("Z", "X"):
        return True  # killed, not yet waited for by its parent: the process is gone
    if pid_start is None:
        return False
    current = _process_start_time(pid)
    return current is not None and current != pid_start


def _int4(value: int) -> int:
    """``value`` wrapped into PostgreSQL's signed 32-bit range (an advisory-lock key half)."""
    value %= 1 << 32
    return value - (1 << 32) if value >= 1 << 31 else value


def _record_row(run_id: str, record: ProjectRecord) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "project_key": record.project_key,
        "scope_key": record.scope_key,
        "source_kind": record.source_kind,
        "name": record.name,
        "location": record.location,
        "vcs": record.vcs,
        "path": record.path,
        "remote_url": record.remote_url,
        "normalized_remote": record.normalized_remote,
        "default_branch": record.default_branch,
        "head_commit": record.head_commit,
        "last_commit_at": record.last_commit_at,
        "markers": sorted(record.markers),
        "attributes": record.attributes or {},
        "content_hash": record.content_hash(),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _under(location_col, prefix: str):
    """SQL: ``location`` is ``prefix`` or lies below it (no LIKE, so no escaping of ``%``/``_``)."""
    return sa.or_(
        location_col == prefix,
        sa.func.substr(location_col, 1, len(prefix) + 1) == prefix.rstrip("/") + "/",
    )


class InventoryStore:
    """The inventory database and its run lifecycle. Safe to share between threads."""

    def __init__(self, url: str, *, heartbeat_timeout: timedelta = timedelta(minutes=15)):
        self.url = url
        self.engine: Engine = create_inventory_engine(url)
        self.heartbeat_timeout = heartbeat_timeout
        # Runs whose staging met a duplicate key (PostgreSQL: skip the direct-COPY attempt).
        self._stage_duplicates: set[str] = set()
        # PostgreSQL: run id -> (the dedicated connection holding its lease, its generation).
        self._leases: dict[str, tuple[Any, int]] = {}
        self._lease_lock = threading.Lock()
        self._lease_space: int | None = None
        ensure_schema(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Close pooled connections and drop the leases of runs this store holds."""
        for run_id in list(self._leases):
            self._release_lease(run_id)
        self.engine.dispose()

    # ------------------------------------------------------------------ leases (PostgreSQL)

    def _lease_key(self, generation: int) -> tuple[int, int]:
        """The advisory-lock key of a generation: (this inventory's space, generation)."""
        if self._lease_space is None:
            with self.engine.connect() as conn:
                where = conn.execute(sa.text("SELECT current_database(), current_schema()")).one()
            self._lease_space = _int4(zlib.crc32(f"enum_pipeline:{where[0]}.{where[1]}".encode()))
        return self._lease_space, _int4(generation)

    def _acquire_lease(self, run_id: str, generation: int) -> str | None:
        """Take the run's lease on a dedicated connection; None on SQLite.

        Raises ``RunActiveError`` when another session still holds it.
        """
        if self.dialect != "postgresql":
            return None
        space, objid = self._lease_key(generation)
        lease = f"pg_advisory:{space}:{objid}"
        with self._lease_lock:
            if run_id in self._leases and self._lease_alive(self._leases[run_id][0]):
                return lease
            self._release_lease(run_id)
            fairy = self.engine.raw_connection()
            dbapi = fairy.driver_connection
            fairy.detach()  # never back into the pool: closing it ends the session
            try:
                dbapi.rollback()
                dbapi.autocommit = True  # idle, never "idle in transaction", for the run's life
                with dbapi.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (space, objid))
                    acquired = cur.fetchone()[0]
            except Exception:
                dbapi.close()
                raise
            if not acquired:
                dbapi.close()
                raise RunActiveError(run_id, f"its lease {lease} is held by a live session")
            self._leases[run_id] = (dbapi, generation)
        return lease

    @staticmethod
    def _lease_alive(dbapi) -> bool:
        try:
            with dbapi.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means the session is gone
            return False

    def _release_lease(self, run_id: str) -> None:
        held = self._leases.pop(run_id, None)
        if held is not None:
            with contextlib.suppress(Exception):  # the session is gone either way
                held[0].close()

    def _keep_lease(self, run_id: str) -> None:
        """Take the lease again if its session was lost while this process holds the run."""
        held = self._leases.get(run_id)
        if held is not None and not self._lease_alive(held[0]):
            self._acquire_lease(run_id, held[1])

    def _release_leases(self, run_ids: Iterable[str]) -> None:
        with self._lease_lock:
            for run_id in run_ids:
                self._release_lease(run_id)

    def _lease_is_free(self, conn: Connection, lease: str | None) -> bool:
        """True when nobody holds ``lease``: the session that held the run is gone."""
        if not lease or self.dialect != "postgresql":
            return False
        _, space, objid = lease.split(":")
        # A transaction-level lock: taken only to test, released when this transaction ends.
        return bool(
            conn.execute(
                sa.text("SELECT pg_try_advisory_xact_lock(:space, :objid)"),
                {"space": int(space), "objid": int(objid)},
            ).scalar_one()
        )

    # ------------------------------------------------------------------ helpers

    def _insert(self, table: sa.Table):
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _lock_inventory(self, conn: Connection) -> int:
        """Serialise writers on the inventory row; returns the last generation handed out."""
        stmt = sa.select(t.inventory.c.last_generation).where(t.inventory.c.id == 1)
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return int(conn.execute(stmt).scalar_one())

    def _run_row(self, conn: Connection, run_id: str, *, lock: bool = False):
        stmt = sa.select(t.run_state).where(t.run_state.c.run_id == run_id)
        if lock and self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise UnknownRunError(f"no run_state row for run {run_id}")
        return row

    def _require_active(self, conn: Connection, run_id: str):
        row = self._run_row(conn, run_id, lock=True)
        if row["status"] != "active":
            raise RunNotActiveError(
                f"run {run_id} is {row['status']}"
                + (f" ({row['error']})" if row["error"] else "")
                + "; it can no longer write"
            )
        self._keep_lease(run_id)
        return row

    # ------------------------------------------------------------------ begin / heartbeat

    def begin(self, run_id: str, *, now: datetime | None = None) -> int:
        """Start run ``run_id`` and return its generation; refuse while another run is active.

        An active run whose heartbeat expired, whose process on this host is gone, or (on
        PostgreSQL) whose database session is gone, is first marked ``failed`` (``abandoned``).
        """
        now = now or utcnow()
        leased = False
        try:
            with self.engine.begin() as conn:
                last_generation = self._lock_inventory(conn)
                existing = conn.execute(
                    sa.select(t.run_state.c.run_id).where(t.run_state.c.run_id == run_id)
                ).first()
                if existing is not None:
                    raise StoreError(f"run {run_id} already exists; a run id is used once")
                active = (
                    conn.execute(sa.select(t.run_state).where(t.run_state.c.status == "active"))
                    .mappings()
                    .first()
                )
                if active is not None:
                    reason = self._abandon_reason(conn, active, now)
                    if reason is None:
                        age = (now - active["heartbeat_at"]).total_seconds()
                        raise RunActiveError(
                            active["run_id"],
                            f"heartbeat {age:.0f}s ago on {active['host']} pid {active['pid']}",
                        )
                    self._mark_failed(conn, active["run_id"], reason, now)
                generation = last_generation + 1
                conn.execute(
                    sa.update(t.inventory)
                    .where(t.inventory.c.id == 1)
                    .values(last_generation=generation)
                )
                pid = os.getpid()
                # Taken before the row is visible, so nobody sees this run without its lease.
                lease = self._acquire_lease(run_id, generation)
                leased = True
                conn.execute(
                    sa.insert(t.run_state).values(
                        run_id=run_id,
                        generation=generation,
                        status="active",
                        flush_succeeded=False,
                        attempt_run_id=run_id,
                        host=socket.gethostname(),
                        pid=pid,
                        pid_start=_process_start_time(pid),
                        lease=lease,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
        except BaseException:
            if leased:
                self._release_leases([run_id])
            raise
        # The new run is the only active one: any other lease this store holds is stale.
        self._release_leases([r for r in list(self._leases) if r != run_id])
        return generation

    def _abandon_reason(self, conn: Connection, row, now: datetime) -> str | None:
        if now - row["heartbeat_at"] > self.heartbeat_timeout:
            return (
                f"abandoned: heartbeat stopped at {row['heartbeat_at'].isoformat()} "
                f"(timeout {self.heartbeat_timeout.total_seconds():.0f}s)"
            )
        if holder_is_dead(row["host"], row["pid"], row["pid_start"]):
            return f"abandoned: process {row['pid']} on {row['host']} is gone"
        if self._lease_is_free(conn, row["lease"]):
            return (
                f"abandoned: the database session of pid {row['pid']} on {row['host']} "
                f"is gone (lease {row['lease']} free)"
            )
        return None

    def heartbeat(self, run_id: str, *, now: datetime | None = None) -> None:
        """Tell reapers the run is alive; on PostgreSQL, take the lease again if its session
        was lost while the run is still ours (``RunActiveError`` if another session took it)."""
        self._keep_lease(run_id)
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id, t.run_state.c.status == "active")
                .values(heartbeat_at=now or utcnow())
            )

    def resume(self, run_id: str, attempt_run_id: str) -> int:
        """Re-activate a failed run whose scan is staged, so a re-execution can finish its flush.

        Allowed only while no other run is active and no newer run has begun, so a re-execution
        can never write over a newer run's view; a run still ``active`` is taken over only when
        its holder's lease is ours or free. Returns the run's generation.
        """
        now = utcnow()
        held = run_id in self._leases
        try:
            return self._resume(run_id, attempt_run_id, now)
        except BaseException:
            if not held:
                self._release_leases([run_id])
            raise

    def _resume(self, run_id: str, attempt_run_id: str, now: datetime) -> int:
        with self.engine.begin() as conn:
            last_generation = self._lock_inventory(conn)
            row = self._run_row(conn, run_id, lock=True)
            generation = int(row["generation"])
            if row["status"] == "completed":
                raise StoreError(f"run {run_id} is already completed")
            if row["status"] != "active":
                if generation != last_generation:
                    raise StoreError(
                        f"run {run_id} (generation {generation}) cannot resume: "
                        f"generation {last_generation} started after it"
                    )
                active = conn.execute(
                    sa.select(t.run_state.c.run_id).where(t.run_state.c.status == "active")
                ).first()
                if active is not None:
                    raise RunActiveError(active[0], "another run holds the inventory")
            pid = os.getpid()
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(
                    status="active",
                    attempt_run_id=attempt_run_id,
                    heartbeat_at=now,
                    finished_at=None,
                    error=None,
                    host=socket.gethostname(),
                    pid=pid,
                    pid_start=_process_start_time(pid),
                    lease=self._acquire_lease(run_id, generation),
                )
            )
            return generation

    # ------------------------------------------------------------------ scan

    def reset_staging(self, run_id: str) -> None:
        """Forget what an earlier attempt of this run staged (a scan that starts over)."""
        with self.engine.begin() as conn:
            self._require_active(conn, run_id)
            conn.execute(sa.delete(t.staged_projects).where(t.staged_projects.c.run_id == run_id))
            conn.execute(sa.delete(t.run_scopes).where(t.run_scopes.c.run_id == run_id))
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(scanned_count=0, staged_count=0)
            )

    def stage(self, run_id: str, records: Iterable[ProjectRecord]) -> int:
        """Durably stage a batch of records for ``run_id``; returns how many were new.

        A key seen twice in one run (overlapping roots) is kept once, first sighting wins.
        """
        rows = [_record_row(run_id, r) for r in records]
        if not rows:
            self.heartbeat(run_id)
            return 0
        with self.engine.begin() as conn:
            self._require_active(conn, run_id)
            if self.dialect == "postgresql":
                inserted = self._copy_stage(conn, run_id, rows)
            else:
                stmt = self._insert(t.staged_projects).on_conflict_do_nothing(
                    index_elements=["run_id", "project_key"]
                )
                inserted = conn.execute(stmt, rows).rowcount
                if inserted is None or inserted < 0:
                    inserted = len(rows)
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(
                    scanned_count=t.run_state.c.scanned_count + len(rows),
                    staged_count=t.run_state.c.staged_count + inserted,
                    heartbeat_at=utcnow(),
                )
            )
        return inserted

    def _copy_stage(self, conn: Connection, run_id: str, rows: list[dict[str, Any]]) -> int:
        """PostgreSQL: COPY the batch into ``staged_projects``.

        Fast path: one COPY straight into the table under a savepoint; it succeeds exactly when
        every key is new to the run (no duplicates), which is what the slow path would insert.
        On a duplicate key the savepoint is rolled back and the batch goes the slow way: COPY
        into a temporary table, then one INSERT … ON CONFLICT DO NOTHING (first sighting wins).
        After one duplicate, the rest of that run's batches go the slow way directly.
        """
        from psycopg import errors as pg_errors
        from psycopg.types.json import Jsonb

        columns = _STAGE_COLUMNS
        values = []
        for row in rows:
            value = list(map(row.__getitem__, columns))
            value[_MARKERS_AT] = Jsonb(value[_MARKERS_AT])
            value[_ATTRIBUTES_AT] = Jsonb(value[_ATTRIBUTES_AT])
            values.append(value)
        column_list = ", ".join(columns)
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cur:
            if run_id not in self._stage_duplicates:
                cur.execute("SAVEPOINT enum_stage_copy")
                try:
                    with cur.copy(f"COPY staged_projects ({column_list}) FROM STDIN") as copy:
                        for value in values:
                            copy.write_row(value)
                except pg_errors.UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT enum_stage_copy")
                    self._stage_duplicates.add(run_id)
                else:
                    cur.execute("RELEASE SAVEPOINT enum_stage_copy")
                    return len(values)
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _stage_batch "
                "(LIKE staged_projects INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            with cur.copy(f"COPY _stage_batch ({column_list}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            cur.execute(
                f"INSERT INTO staged_projects ({column_list}) "
                f"SELECT DISTINCT ON (run_id, project_key) {column_list} "
                "FROM _stage_batch ON CONFLICT (run_id, project_key) DO NOTHING"
            )
            inserted = cur.rowcount
            cur.execute("DELETE FROM _stage_batch")
        return inserted

    def end_scope(self, run_id: str, verdict: ScopeVerdict) -> None:
        """Record how the run ended one scope (complete or not, why, what is protected)."""
        with self.engine.begin() as conn:
            self._require_active(conn, run_id)
            values = {
                "source_kind": verdict.source_kind,
                "complete": verdict.complete,
                "reason": verdict.reason,
                "protected": list(verdict.protected),
                "seen_count": verdict.seen,
                "fingerprint": verdict.identity or {},  # the identity, until store9 migrates it
                "ended_at": utcnow(),
            }
            stmt = (
                self._insert(t.run_scopes)
                .values(run_id=run_id, scope_key=verdict.scope_key, **values)
                .on_conflict_do_update(index_elements=["run_id", "scope_key"], set_=values)
            )
            conn.execute(stmt)

    # ------------------------------------------------------------------ flush / verify

    def flush(self, run_id: str) -> FlushResult:
        """Upsert the run's staged records into ``projects`` in one set-based statement.

        A row last seen by a newer generation is never overwritten (fencing).
        """
        now = utcnow()
        p, s = t.projects, t.staged_projects
        with self.engine.begin() as conn:
            run = self._require_active(conn, run_id)
            generation = int(run["generation"])
            staged_q = sa.select(sa.func.count()).select_from(s).where(s.c.run_id == run_id)
            staged = conn.execute(staged_q).scalar_one()
            joined = s.join(p, p.c.project_key == s.c.project_key)
            existing = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(
                        sa.func.sum(sa.case((p.c.content_hash != s.c.content_hash, 1), else_=0)),
                        0,
                    ),
                )
                .select_from(joined)
                .where(s.c.run_id == run_id)
            ).one()
            matched, changed = int(existing[0]), int(existing[1])

            data_cols = ["project_key", *t.PROJECT_DATA_COLUMNS]
            select = sa.select(
                *[s.c[c] for c in data_cols],
                sa.literal(run_id).label("run_id"),
                sa.literal(generation).label("seen_generation"),
                sa.literal(now, t.UTCDateTime()).label("first_seen_at"),
                sa.literal(now, t.UTCDateTime()).label("last_seen_at"),
                sa.literal(now, t.UTCDateTime()).label("changed_at"),
                sa.literal(0).label("missed_runs"),
            ).where(s.c.run_id == run_id)
            insert = self._insert(p).from_select(
                [
                    *data_cols,
                    "run_id",
                    "seen_generation",
                    "first_seen_at",
                    "last_seen_at",
                    "changed_at",
                    "missed_runs",
                ],
                select,
            )
            excluded = insert.excluded
            update = {c: excluded[c] for c in t.PROJECT_DATA_COLUMNS}
            update.update(
                run_id=excluded.run_id,
                seen_generation=excluded.seen_generation,
                last_seen_at=excluded.last_seen_at,
                changed_at=sa.case(
                    (p.c.content_hash != excluded.content_hash, excluded.changed_at),
                    else_=p.c.changed_at,
                ),
                missing_since=None,
                missed_runs=0,
            )
            stmt = insert.on_conflict_do_update(
                index_elements=["project_key"],
                set_=update,
                where=sa.or_(
                    p.c.seen_generation.is_(None),
                    p.c.seen_generation <= excluded.seen_generation,
                ),
            )
            conn.execute(stmt)
            result = FlushResult(
                run_id=run_id,
                generation=generation,
                staged=int(staged),
                added=int(staged) - matched,
                changed=changed,
                unchanged=matched - changed,
            )
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(
                    flushed_count=result.staged,
                    added_count=result.added,
                    changed_count=result.changed,
                    unchanged_count=result.unchanged,
                    heartbeat_at=utcnow(),
                )
            )
        return result

    def verify_and_confirm(self, run_id: str) -> VerifyResult:
        """Prove the flush: every staged key is in ``projects`` with this run's generation.

        Only then set ``last_confirmed_run_id`` on those rows and ``flush_succeeded`` on the run,
        in the same transaction. Raises ``FlushVerificationError`` otherwise.
        """
        p, s = t.projects, t.staged_projects
        with self.engine.begin() as conn:
            run = self._require_active(conn, run_id)
            generation = int(run["generation"])
            staged = conn.execute(
                sa.select(sa.func.count()).select_from(s).where(s.c.run_id == run_id)
            ).scalar_one()
            present = conn.execute(
                sa.select(sa.func.count())
                .select_from(s.join(p, p.c.project_key == s.c.project_key))
                .where(
                    s.c.run_id == run_id,
                    p.c.seen_generation == generation,
                    p.c.content_hash == s.c.content_hash,
                )
            ).scalar_one()
            stamped = conn.execute(
                sa.select(sa.func.count()).select_from(p).where(p.c.seen_generation == generation)
            ).scalar_one()
            if staged != present or stamped != staged or run["flushed_count"] != staged:
                raise FlushVerificationError(
                    f"run {run_id}: staged {staged}, present with generation {generation}: "
                    f"{present}, rows stamped with it: {stamped}, flushed {run['flushed_count']}"
                )
            confirmed = conn.execute(
                sa.update(p)
                .where(p.c.seen_generation == generation)
                .values(last_confirmed_run_id=run_id, confirmed_generation=generation)
            ).rowcount
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(flush_succeeded=True, confirmed_count=confirmed, heartbeat_at=utcnow())
            )
        return VerifyResult(run_id, generation, int(staged), int(present), int(confirmed), True)

    # ------------------------------------------------------------------ complete / fail

    def complete(self, run_id: str) -> str:
        """End the run: ``completed`` iff its flush was verified, else ``failed``."""
        status = self._complete(run_id)
        self._release_leases([run_id])  # not on error: a run still active keeps its lease
        return status

    def _complete(self, run_id: str) -> str:
        now = utcnow()
        with self.engine.begin() as conn:
            row = self._run_row(conn, run_id, lock=True)
            if row["status"] != "active":
                return row["status"]
            if row["flush_succeeded"]:
                conn.execute(
                    sa.update(t.run_state)
                    .where(t.run_state.c.run_id == run_id)
                    .values(status="completed", finished_at=now, heartbeat_at=now)
                )
                return "completed"
            self._mark_failed(conn, run_id, "flush not verified", now)
            return "failed"

    def fail(self, run_id: str, reason: str) -> bool:
        """Mark an ``active`` run ``failed``. Returns False when it was not active (no change)."""
        with self.engine.begin() as conn:
            failed = self._mark_failed(conn, run_id, reason, utcnow())
        self._release_leases([run_id])
        return failed

    def _mark_failed(self, conn: Connection, run_id: str, reason: str, now: datetime) -> bool:
        return (
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id, t.run_state.c.status == "active")
                .values(
                    status="failed", flush_succeeded=False, error=reason[:4000], finished_at=now
                )
            ).rowcount
            > 0
        )

    def fail_attempt(self, attempt_run_id: str, reason: str) -> list[str]:
        """Mark failed the active run whose current attempt is Dagster run ``attempt_run_id``."""
        with self.engine.begin() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(t.run_state.c.run_id).where(
                        t.run_state.c.status == "active",
                        sa.or_(
                            t.run_state.c.attempt_run_id == attempt_run_id,
                            t.run_state.c.run_id == attempt_run_id,
                        ),
                    )
                )
            ]
            now = utcnow()
            failed = [rid for rid in ids if self._mark_failed(conn, rid, reason, now)]
        self._release_leases(failed)
        return failed

    def reap(
        self,
        *,
        now: datetime | None = None,
        attempt_finished: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Mark ``failed`` (``abandoned``) every active run that provably stopped.

        Stopped: heartbeat older than the timeout, process on this host gone, database session
        gone (PostgreSQL lease free), or (when
        ``attempt_finished`` is given) the orchestrator says its attempt ended.
        """
        now = now or utcnow()
        reaped = []
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(t.run_state).where(t.run_state.c.status == "active"))
            for row in rows.mappings().all():
                reason = self._abandon_reason(conn, row, now)
                if reason is None and attempt_finished is not None:
                    attempt = row["attempt_run_id"] or row["run_id"]
                    if attempt_finished(attempt):
                        reason = f"abandoned: orchestrator run {attempt} ended while active"
                if reason and self._mark_failed(conn, row["run_id"], reason, now):
                    reaped.append(row["run_id"])
        self._release_leases(reaped)
        return reaped

    # ------------------------------------------------------------------ reads

    def get_run(self, run_id: str) -> RunInfo:
        """The ``run_state`` row of ``run_id``."""
        with self.engine.connect() as conn:
            row = self._run_row(conn, run_id)
        return RunInfo(**{f: row[f] for f in RunInfo.__dataclass_fields__})

    def runs(self, limit: int = 50) -> list[RunInfo]:
        """The newest runs first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.run_state).order_by(t.run_state.c.generation.desc()).limit(limit)
            ).mappings()
            return [RunInfo(**{f: r[f] for f in RunInfo.__dataclass_fields__}) for r in rows]

    def active_run(self) -> RunInfo | None:
        """The active run, if any."""
        with self.engine.connect() as conn:
            rid = conn.execute(
                sa.select(t.run_state.c.run_id).where(t.run_state.c.status == "active")
            ).scalar()
        return self.get_run(rid) if rid else None

    def scopes(self, run_id: str) -> list[dict[str, Any]]:
        """The scope verdicts a run recorded."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.run_scopes)
                .where(t.run_scopes.c.run_id == run_id)
                .order_by(t.run_scopes.c.scope_key)
            ).mappings()
            return [dict(r) for r in rows]

    def project_keys(self, scope_key: str | None = None) -> set[str]:
        """Keys of the projects in the inventory (optionally of one scope)."""
        stmt = sa.select(t.projects.c.project_key)
        if scope_key is not None:
            stmt = stmt.where(t.projects.c.scope_key == scope_key)
        with self.engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def projects(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``projects``, ordered by key."""
        stmt = sa.select(t.projects).order_by(t.projects.c.project_key)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def count_projects(self) -> int:
        """How many projects the inventory holds."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(t.projects)).scalar_one()

    def history(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Removed projects (optionally those one cleanup removed), newest first."""
        stmt = sa.select(t.removed_projects).order_by(t.removed_projects.c.id.desc())
        if run_id is not None:
            stmt = stmt.where(t.removed_projects.c.removed_by_run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def cleanup_record(self, run_id: str) -> dict[str, Any] | None:
        """The recorded cleanup of ``run_id``, if any."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def prune_staging(self, keep_runs: int = 3) -> int:
        """Drop staged rows of finished runs except the newest ``keep_runs``; returns rows."""
        with self.engine.begin() as conn:
            keep = sa.select(t.run_state.c.run_id).order_by(t.run_state.c.generation.desc())
            keep_ids = list(conn.execute(keep.limit(keep_runs)).scalars())
            active = sa.select(t.run_state.c.run_id).where(t.run_state.c.status == "active")
            return conn.execute(
                sa.delete(t.staged_projects).where(
                    t.staged_projects.c.run_id.not_in(keep_ids),
                    t.staged_projects.c.run_id.not_in(active),
                )
            ).rowcount

    # ------------------------------------------------------------------ cleanup

    def approve_cleanup(self, run_id: str, approved_by: str) -> dict[str, Any]:
        """Approve the blocked cleanup of ``run_id`` for the numbers it was blocked with."""
        with self.engine.begin() as conn:
            self._lock_inventory(conn)
            row = (
                conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id))
                .mappings()
                .first()
            )
            if row is None or row["status"] != "blocked":
                raise StoreError(f"run {run_id} has no blocked cleanup to approve")
            conn.execute(
                sa.update(t.cleanups)
                .where(t.cleanups.c.run_id == run_id)
                .values(
                    approved_by=approved_by, approved_max=row["candidates"], updated_at=utcnow()
                )
            )
            return dict(row) | {"approved_by": approved_by, "approved_max": row["candidates"]}

    def safe_cleanup_old_projects(
        self,
        run_id: str,
        policy: CleanupPolicy | None = None,
        *,
        dry_run: bool = False,
        approved_by: str | None = None,
    ) -> CleanupResult:
        """Remove the projects a completed, verified run did not see, in one transaction.

        Only scopes the run read completely are considered; a row is a candidate only if its
        ``seen_generation`` is strictly older than the run's (NULL never deletes); protected
        sub-scopes are kept; the deletion guard may hold the whole cleanup back (``blocked``).
        Removed rows go to ``removed_projects``. Running it twice changes nothing.
        """
        policy = policy or CleanupPolicy()
        with self.engine.begin() as conn:
            result = self._cleanup(conn, run_id, policy, dry_run, approved_by)
            if dry_run:
                conn.rollback()
        return result

    def _cleanup(self, conn, run_id, policy, dry_run, approved_by) -> CleanupResult:
        now = utcnow()
        p = t.projects
        self._lock_inventory(conn)
        run = self._run_row(conn, run_id, lock=True)
        if run["status"] != "completed" or not run["flush_succeeded"]:
            raise CleanupRefusedError(
                f"run {run_id} is {run['status']} with flush_succeeded={run['flush_succeeded']}; "
                "only a completed, flush-verified run may clean up"
            )
        generation = int(run["generation"])
        record = (
            conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id))
            .mappings()
            .first()
        )
        if record is not None and record["status"] in ("done", "noop") and not dry_run:
            return CleanupResult(
                run_id,
                generation,
                record["status"],
                candidates=record["candidates"],
                removed=record["removed"],
                marked_missing=record["marked_missing"],
                reason=record["reason"],
                already_done=True,
            )
        approved_max = record["approved_max"] if record is not None else None
        approver = approved_by or (record["approved_by"] if record is not None else None)

        result = CleanupResult(run_id, generation, "done", dry_run=dry_run)
        scope_rows = conn.execute(
            sa.select(t.run_scopes).where(t.run_scopes.c.run_id == run_id)
        ).mappings()
        plans: list[tuple[ScopeCleanup, Any]] = []
        # A newer run that staged a row has seen it, even before (or without) its flush.
        s, rs = t.staged_projects, t.run_state
        seen_by_newer = (
            sa.select(s.c.project_key)
            .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
            .where(s.c.project_key == p.c.project_key, rs.c.generation > generation)
            .exists()
        )
        for scope in scope_rows.all():
            sc = ScopeCleanup(scope["scope_key"], bool(scope["complete"]))
            result.scopes.append(sc)
            in_scope = p.c.scope_key == scope["scope_key"]
            stale = sa.and_(
                p.c.seen_generation.is_not(None),
                p.c.seen_generation < generation,
                ~seen_by_newer,
            )
            if not scope["complete"]:
                skip = f"scope read incompletely: {scope['reason']}"
            else:
                skip = self._scope_skip_reason(conn, scope, generation)
            if skip:
                sc.skipped_reason = skip
                sc.total, sc.protected = self._counts(conn, in_scope, stale)
                result.kept_incomplete += sc.protected
                continue
            protected = [_under(p.c.location, prefix) for prefix in scope["protected"] or []]
            if protected:
                stale_protected = sa.and_(stale, sa.or_(*protected))
                stale = sa.and_(stale, sa.not_(sa.or_(*protected)))
            due = sa.and_(stale, p.c.missed_runs + 1 >= policy.missing_runs_before_delete)
            # One pass over the scope's rows for every count (not one query per count).
            if protected:
                sc.total, sc.protected, sc.candidates, due_count = self._counts(
                    conn, in_scope, stale_protected, stale, due
                )
                result.kept_incomplete += sc.protected
            else:
                sc.total, sc.candidates, due_count = self._counts(conn, in_scope, stale, due)
            stale = sa.and_(in_scope, stale)
            sc.blocked_reason = policy.guard(sc.scope_key, due_count, sc.total)
            plans.append((sc, stale))
            result.candidates += sc.candidates
            result.removed += due_count
            result.marked_missing += sc.candidates - due_count

        blocked = [sc for sc in result.scopes if sc.blocked_reason]
        if blocked and approved_max is not None and result.removed <= approved_max:
            result.reason = f"approved by {approver} for up to {approved_max} removals"
            for sc in blocked:
                sc.blocked_reason = None
            blocked = []
        if blocked:
            result.status = "blocked"
            result.reason = "; ".join(sc.blocked_reason for sc in blocked)
        elif result.candidates == 0:
            result.status = "noop"
            result.reason = result.reason or "nothing to remove"

        if result.status == "done" and not dry_run:
            removed_total, marked_total = 0, 0
            for sc, stale in plans:
                if sc.candidates == 0:
                    continue
                marked = conn.execute(
                    sa.update(p)
                    .where(stale)
                    .values(
                        missed_runs=p.c.missed_runs + 1,
                        missing_since=sa.func.coalesce(p.c.missing_since, now),
                    )
                ).rowcount
                due = sa.and_(stale, p.c.missed_runs >= policy.missing_runs_before_delete)
                keys = self._move_to_history(conn, due, run_id, now)
                # A concurrent flush may have refreshed some counted candidates meanwhile
                # (PostgreSQL re-checks the WHERE on rows it waited for): count what was done.
                sc.candidates = marked
                sc.removed = len(keys)
                sc.marked_missing = marked - sc.removed
                removed_total += sc.removed
                marked_total += sc.marked_missing
                result.removed_keys.extend(keys)
            result.removed, result.marked_missing = removed_total, marked_total
            result.candidates = sum(sc.candidates for sc, _ in plans)
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id)
                .values(removed_count=removed_total)
            )
        if not dry_run:
            self._record_cleanup(conn, result, record is not None, approver, now)
        return result

    def _counts(self, conn: Connection, where, *conditions) -> tuple[int, ...]:
        """``count(*)`` of the rows matching ``where``, then of those also matching each of
        ``conditions``, in one query."""
        p = t.projects
        sums = [
            sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0) for cond in conditions
        ]
        row = conn.execute(sa.select(sa.func.count(), *sums).select_from(p).where(where)).one()
        return tuple(int(v) for v in row)

    def _scope_skip_reason(self, conn: Connection, scope, generation: int) -> str | None:
        """Why a completely read scope must still not be cleaned by this run, if at all."""
        rs, sc = t.run_state, t.run_scopes
        newer = conn.execute(
            sa.select(rs.c.run_id)
            .select_from(sc.join(rs, rs.c.run_id == sc.c.run_id))
            .where(
                sc.c.scope_key == scope["scope_key"],
                sc.c.complete.is_(True),
                rs.c.generation > generation,
                rs.c.status == "completed",
            )
            .order_by(rs.c.generation.desc())
            .limit(1)
        ).scalar()
        if newer:
            return f"superseded: newer completed run {newer} read this scope"
        previous = conn.execute(
            sa.select(sc.c.fingerprint, rs.c.run_id)
            .select_from(sc.join(rs, rs.c.run_id == sc.c.run_id))
            .where(
                sc.c.scope_key == scope["scope_key"],
                sc.c.complete.is_(True),
                rs.c.generation < generation,
                rs.c.status == "completed",
            )
            .order_by(rs.c.generation.desc())
            .limit(1)
        ).first()
        now_fp = scope["fingerprint"] or {}
        if previous is not None and previous[0]:
            before = previous[0]
            for key in ("st_dev",):
                if key in before and key in now_fp and before[key] != now_fp[key]:
                    return (
                        f"scope changed identity: {key} was {before[key]} in run {previous[1]}, "
                        f"now {now_fp[key]} (a different filesystem is mounted there?)"
                    )
        return None

    def _move_to_history(self, conn: Connection, where, run_id: str, now: datetime) -> list[str]:
        """Move the rows matching ``where`` to ``removed_projects``, in key order.

        Streams: only the keys are read at once; full rows are read, recorded and deleted
        ``HISTORY_BATCH`` at a time, so memory stays flat however many rows go.
        """
        p = t.projects
        keys: list[str] = []
        all_keys = list(
            conn.execute(
                sa.select(p.c.project_key).where(where).order_by(p.c.project_key)
            ).scalars()
        )
        for start in range(0, len(all_keys), HISTORY_BATCH):
            chunk = all_keys[start : start + HISTORY_BATCH]
            batch = (
                conn.execute(
                    sa.select(p).where(p.c.project_key.in_(chunk), where).order_by(p.c.project_key)
                )
                .mappings()
                .all()
            )
            if not batch:
                continue
            conn.execute(
                sa.insert(t.removed_projects),
                [
                    {
                        "project_key": r["project_key"],
                        "scope_key": r["scope_key"],
                        "removed_by_run_id": run_id,
                        "removed_at": now,
                        "row": {k: _json_safe(v) for k, v in r.items()},
                    }
                    for r in batch
                ],
            )
            batch_keys = [r["project_key"] for r in batch]
            conn.execute(sa.delete(p).where(p.c.project_key.in_(batch_keys), where))
            keys.extend(batch_keys)
        return keys

    def _record_cleanup(self, conn, result: CleanupResult, exists: bool, approver, now) -> None:
        values = {
            "generation": result.generation,
            "status": result.status,
            "candidates": result.candidates,
            "removed": result.removed,
            "marked_missing": result.marked_missing,
            "reason": result.reason,
            "details": {"scopes": [asdict(s) for s in result.scopes]},
            "updated_at": now,
        }
        if result.status != "blocked":
            values["approved_by"] = approver
        if exists:
            conn.execute(
                sa.update(t.cleanups).where(t.cleanups.c.run_id == result.run_id).values(**values)
            )
        else:
            conn.execute(sa.insert(t.cleanups).values(run_id=result.run_id, **values))

    # ------------------------------------------------------------------ restore

    def restore(self, cleanup_run_id: str, restored_by: str = "operator") -> list[str]:
        """Bring back every project the cleanup of ``cleanup_run_id`` removed and that is absent.

        Returns the restored keys. Running it again restores nothing more.
        """
        h, p = t.removed_projects, t.projects
        now = utcnow()
        restored: list[str] = []
        with self.engine.begin() as conn:
            self._lock_inventory(conn)
            rows = (
                conn.execute(
                    sa.select(h)
                    .where(h.c.removed_by_run_id == cleanup_run_id, h.c.restored_at.is_(None))
                    .order_by(h.c.id)
                )
                .mappings()
                .all()
            )
            present = set(
                conn.execute(
                    sa.select(p.c.project_key).where(
                        p.c.project_key.in_([r["project_key"] for r in rows])
                    )
                ).scalars()
            )
            columns = {c.name: c for c in p.columns}
            for row in rows:
                if row["project_key"] in present:
                    continue
                data = {k: v for k, v in row["row"].items() if k in columns}
                for name in ("last_commit_at", "first_seen_at", "last_seen_at", "changed_at"):
                    if data.get(name):
                        data[name] = datetime.fromisoformat(data[name])
                data.update(missing_since=None, missed_runs=0)
                conn.execute(sa.insert(p).values(**data))
                restored.append(row["project_key"])
            if rows:
                conn.execute(
                    sa.update(h)
                    .where(h.c.id.in_([r["id"] for r in rows]))
                    .values(restored_at=now, restored_by=restored_by)
                )
        return restored


def open_store(url: str | None = None, **kwargs: Any) -> InventoryStore:
    """An ``InventoryStore`` on ``url`` (default: ``ENUM_PIPELINE_DATABASE_URL`` or SQLite)."""
    from enum_pipeline.store.engine import default_database_url

    return InventoryStore(url or default_database_url(), **kwargs)
