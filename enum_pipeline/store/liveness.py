"""Who is alive: process checks on this host and, on PostgreSQL, the run's lease.

The process that holds a run also holds a session-level advisory lock, its *lease*, on a
connection of its own for as long as the run is active. The server releases it the moment that
session ends (process killed, host gone, connection terminated), so a new run or the reaper
knows at once, from any machine, that the holder is dead.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enum_pipeline.store.errors import RunActiveError


def process_start_time(pid: int) -> int | None:
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
    current = process_start_time(pid)
    return current is not None and current != pid_start


def this_process() -> dict[str, Any]:
    """``run_state`` columns naming the calling process as a run's holder."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start_time(pid)}


def _int4(value: int) -> int:
    """``value`` wrapped into PostgreSQL's signed 32-bit range (an advisory-lock key half)."""
    value %= 1 << 32
    return value - (1 << 32) if value >= 1 << 31 else value


def _session_alive(dbapi) -> bool:
    """Whether a lease's session is still there. The session sits idle in autocommit, so the
    server sends it nothing unless it is going away (its goodbye, the closed socket) or has a
    notice: while its socket has nothing to read, this costs no round trip; when something did
    arrive, the session itself is asked."""
    try:
        poller = select.poll()  # not select(): a busy process's descriptors pass 1024
        poller.register(dbapi.fileno(), select.POLLIN)
        if not poller.poll(0):
            return True
        with dbapi.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means the session is gone
        return False


class LeaseKeeper:
    """The leases this process holds, one dedicated connection a run (PostgreSQL only).

    Disabled (SQLite): ``acquire`` returns None and no lease is ever free.
    """

    def __init__(self, engine: Engine, *, enabled: bool):
        self._engine = engine
        self._enabled = enabled
        # run id -> (the dedicated connection holding its lease, its generation).
        self._leases: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()
        self._space: int | None = None

    @property
    def enabled(self) -> bool:
        """True on PostgreSQL, where runs hold leases."""
        return self._enabled

    def holds(self, run_id: str) -> bool:
        """True while this process holds (or held and has not dropped) ``run_id``'s lease."""
        return run_id in self._leases

    def held(self) -> list[str]:
        """Run ids whose lease this process holds."""
        return list(self._leases)

    def _key(self, generation: int) -> tuple[int, int]:
        """The advisory-lock key of a generation: (this inventory's space, generation)."""
        if self._space is None:
            with self._engine.connect() as conn:
                where = conn.execute(sa.text("SELECT current_database(), current_schema()")).one()
            self._space = _int4(zlib.crc32(f"enum_pipeline:{where[0]}.{where[1]}".encode()))
        return self._space, _int4(generation)

    def acquire(self, run_id: str, generation: int) -> str | None:
        """Take the run's lease on a dedicated connection; None when leases are disabled.

        Raises ``RunActiveError`` when another session still holds it.
        """
        if not self._enabled:
            return None
        space, objid = self._key(generation)
        lease = f"pg_advisory:{space}:{objid}"
        with self._lock:
            if run_id in self._leases and _session_alive(self._leases[run_id][0]):
                return lease
            self._drop(run_id)
            dbapi = self._try_lock(space, objid)
            if dbapi is None:
                raise RunActiveError(run_id, f"its lease {lease} is held by a live session")
            self._leases[run_id] = (dbapi, generation)
        return lease

    def _try_lock(self, space: int, objid: int):
        """A new session holding the advisory lock, or None when another session holds it."""
        fairy = self._engine.raw_connection()
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
            return None
        return dbapi

    def _drop(self, run_id: str) -> None:
        held = self._leases.pop(run_id, None)
        if held is not None:
            # Unlock first: a closed session's backend exits, and lets go, only later.
            with contextlib.suppress(Exception), held[0].cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(Exception):  # the session is gone either way
                held[0].close()

    def keep(self, run_id: str) -> None:
        """Take the lease again if its session was lost while this process holds the run."""
        held = self._leases.get(run_id)
        if held is not None and not _session_alive(held[0]):
            self.acquire(run_id, held[1])

    def release(self, run_ids: Iterable[str]) -> None:
        """Drop the leases of ``run_ids`` (those this process holds)."""
        with self._lock:
            for run_id in run_ids:
                self._drop(run_id)

    def release_all(self) -> None:
        """Drop every lease this process holds."""
        for run_id in list(self._leases):
            self._drop(run_id)

    def is_free(self, conn: Connection, lease: str | None) -> bool:
        """True when nobody holds ``lease``: the session that held the run is gone."""
        if not lease or not self._enabled:
            return False
        _, space, objid = lease.split(":")
        # A transaction-level lock: taken only to test, released when this transaction ends.
        return bool(
            conn.execute(
                sa.text("SELECT pg_try_advisory_xact_lock(:space, :objid)"),
                {"space": int(space), "objid": int(objid)},
            ).scalar_one()
        )


class LocalHolders:
    """Runs some thread of this process keeps alive (the step layer's heartbeat thread).

    For a run whose recorded holder is this very process, a pid check proves nothing (the pid
    is alive: it is ours) and so does its lease (this process holds it); this registry is the
    exact signal instead. Keyed by inventory (its URL) and run id; shared by every store of the
    process, so a second ``InventoryStore`` on the same database sees the holder too.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def add(self, inventory: str, run_id: str) -> None:
        """Record that a thread of this process keeps ``run_id`` alive."""
        with self._lock:
            self._held[(inventory, run_id)] = self._held.get((inventory, run_id), 0) + 1

    def discard(self, inventory: str, run_id: str) -> None:
        """Undo one ``add``."""
        with self._lock:
            count = self._held.pop((inventory, run_id), 0) - 1
            if count > 0:
                self._held[(inventory, run_id)] = count

    def holds(self, inventory: str, run_id: str) -> bool:
        """True while a thread of this process keeps ``run_id`` alive."""
        return (inventory, run_id) in self._held


LOCAL_HOLDERS = LocalHolders()


def _is_this_process(row) -> bool:
    if row["host"] != socket.gethostname() or row["pid"] != os.getpid():
        return False
    return row["pid_start"] is None or row["pid_start"] == process_start_time(os.getpid())


def abandon_reason(
    conn: Connection,
    row,
    now: datetime,
    *,
    timeout: timedelta,
    leases: LeaseKeeper,
    held_here: bool,
) -> str | None:
    """Why the active run ``row`` provably stopped, or None while it may be alive.

    1. Provably gone: its process on this host is gone or its pid reused; on PostgreSQL, its
       lease is free (the holder's database session ended).
    2. A live holder vetoes an old heartbeat: its pid alive on this host, its lease held, or,
       when the holder is this very process, ``held_here`` (a thread of ours keeps the run).
    3. Only with no liveness signal at all (a holder on another host of a SQLite inventory; a
       run of this process that no thread keeps) does an expired heartbeat abandon the run.
    """
    if holder_is_dead(row["host"], row["pid"], row["pid_start"]):
        return f"abandoned: process {row['pid']} on {row['host']} is gone"
    if leases.is_free(conn, row["lease"]):
        return (
            f"abandoned: the database session of pid {row['pid']} on {row['host']} "
            f"is gone (lease {row['lease']} free)"
        )
    if _is_this_process(row):
        if held_here:
            return None
    elif (row["host"] == socket.gethostname() and row["pid"]) or (leases.enabled and row["lease"]):
        return None  # alive on this host, or its lease is held: the heartbeat's age is moot
    if now - row["heartbeat_at"] > timeout:
        return (
            f"abandoned: heartbeat stopped at {row['heartbeat_at'].isoformat()} "
            f"(timeout {timeout.total_seconds():.0f}s, no other sign of its holder)"
        )
    return None
