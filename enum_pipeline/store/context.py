"""What every concern of the store shares: the engine, the dialect, the leases, the timeout.

Every store function is a short transaction of its own; nothing holds a transaction across the
scan. Writers that must not interleave (``begin``, ``resume``, ``safe_cleanup_old_projects``,
``restore``) first lock the single ``inventory`` row (``lock_inventory``): so no two active runs
read a common scope whatever launched them, and generations stay one monotonic sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enum_pipeline.store import schema as t
from enum_pipeline.store.dialect import Dialect
from enum_pipeline.store.errors import RunNotActiveError, UnknownRunError
from enum_pipeline.store.liveness import LeaseKeeper
from enum_pipeline.store.records import RunStatus, utcnow


@dataclass
class StoreContext:
    """The shared parts of one ``InventoryStore``."""

    engine: Engine
    dialect: Dialect
    leases: LeaseKeeper
    heartbeat_timeout: timedelta

    @property
    def inventory_key(self) -> str:
        """This inventory's name in the process-wide registry of live holders."""
        return self.engine.url.render_as_string(hide_password=True)

    def lock_inventory(self, conn: Connection) -> int:
        """Serialise writers on the inventory row; returns the last generation handed out."""
        stmt = sa.select(t.inventory.c.last_generation).where(t.inventory.c.id == 1)
        return int(conn.execute(self.dialect.for_update(stmt)).scalar_one())

    def run_row(self, conn: Connection, run_id: str, *, lock: bool = False):
        """The ``run_state`` row of ``run_id`` (locked when ``lock``); ``UnknownRunError``."""
        stmt = sa.select(t.run_state).where(t.run_state.c.run_id == run_id)
        if lock:
            stmt = self.dialect.for_update(stmt)
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise UnknownRunError(f"no run_state row for run {run_id}")
        return row

    def require_active(self, conn: Connection, run_id: str):
        """The locked row of ``run_id``; ``RunNotActiveError`` unless it may still write."""
        row = self.run_row(conn, run_id, lock=True)
        self._writable(run_id, row["status"], row["error"])
        return row

    def count_batch(self, conn: Connection, run_id: str, scanned: int, staged: int) -> None:
        """Lock ``run_id``'s row and add a batch to its progress counts in one statement;
        ``RunNotActiveError`` unless the run may still write (the caller's transaction then
        rolls back, counts included)."""
        rs = t.run_state
        row = conn.execute(
            sa.update(rs)
            .where(rs.c.run_id == run_id)
            .values(
                scanned_count=rs.c.scanned_count + scanned,
                staged_count=rs.c.staged_count + staged,
                heartbeat_at=utcnow(),
            )
            .returning(rs.c.status, rs.c.error)
        ).first()
        if row is None:
            raise UnknownRunError(f"no run_state row for run {run_id}")
        self._writable(run_id, row.status, row.error)

    def _writable(self, run_id: str, status: str, error: str | None) -> None:
        if status != RunStatus.ACTIVE:
            raise RunNotActiveError(
                f"run {run_id} is {status}"
                + (f" ({error})" if error else "")
                + "; it can no longer write"
            )
        self.leases.keep(run_id)


def set_run(conn: Connection, run_id: str, **values) -> int:
    """Update the ``run_state`` row of ``run_id``; returns the rows changed."""
    return conn.execute(
        sa.update(t.run_state).where(t.run_state.c.run_id == run_id).values(**values)
    ).rowcount
