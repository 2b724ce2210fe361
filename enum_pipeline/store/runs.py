"""The run state machine: begin, heartbeat, resume, complete, fail, reap.

``active`` → ``completed`` (flush verified) or ``failed`` (any error, or abandoned: its holder
provably stopped); a ``failed`` run of the newest generation may be resumed to ``active``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.errors import RunActiveError, StoreError
from enum_pipeline.store.liveness import LOCAL_HOLDERS, abandon_reason, this_process
from enum_pipeline.store.records import RunStatus, utcnow

_ACTIVE = t.run_state.c.status == RunStatus.ACTIVE


def begin(ctx: StoreContext, run_id: str, now: datetime | None = None) -> int:
    """Start run ``run_id`` and return its generation; see ``InventoryStore.begin``."""
    now = now or utcnow()
    leased = False
    try:
        with ctx.engine.begin() as conn:
            last_generation = ctx.lock_inventory(conn)
            _refuse_reused_id(conn, run_id)
            _abandon_or_refuse_active(ctx, conn, now)
            generation = last_generation + 1
            conn.execute(
                sa.update(t.inventory)
                .where(t.inventory.c.id == 1)
                .values(last_generation=generation)
            )
            # Taken before the row is visible, so nobody sees this run without its lease.
            lease = ctx.leases.acquire(run_id, generation)
            leased = True
            _insert_run(conn, run_id, generation, lease, now)
    except BaseException:
        if leased:
            ctx.leases.release([run_id])
        raise
    # The new run is the only active one: any other lease this store holds is stale.
    ctx.leases.release([r for r in ctx.leases.held() if r != run_id])
    return generation


def _refuse_reused_id(conn: Connection, run_id: str) -> None:
    existing = conn.execute(
        sa.select(t.run_state.c.run_id).where(t.run_state.c.run_id == run_id)
    ).first()
    if existing is not None:
        raise StoreError(f"run {run_id} already exists; a run id is used once")


def _abandon_or_refuse_active(ctx: StoreContext, conn: Connection, now: datetime) -> None:
    """Fail the active run if its holder provably stopped; else ``RunActiveError``."""
    active = conn.execute(sa.select(t.run_state).where(_ACTIVE)).mappings().first()
    if active is None:
        return
    reason = _abandon_reason(ctx, conn, active, now)
    if reason is None:
        age = (now - active["heartbeat_at"]).total_seconds()
        raise RunActiveError(
            active["run_id"],
            f"heartbeat {age:.0f}s ago on {active['host']} pid {active['pid']}",
        )
    mark_failed(conn, active["run_id"], reason, now)


def _insert_run(conn: Connection, run_id: str, generation: int, lease, now: datetime) -> None:
    conn.execute(
        sa.insert(t.run_state).values(
            run_id=run_id,
            generation=generation,
            status=RunStatus.ACTIVE,
            flush_succeeded=False,
            attempt_run_id=run_id,
            **this_process(),
            lease=lease,
            started_at=now,
            heartbeat_at=now,
        )
    )


def _abandon_reason(ctx: StoreContext, conn: Connection, row, now: datetime) -> str | None:
    held_here = LOCAL_HOLDERS.holds(ctx.inventory_key, row["run_id"])
    return abandon_reason(
        conn, row, now, timeout=ctx.heartbeat_timeout, leases=ctx.leases, held_here=held_here
    )


def heartbeat(ctx: StoreContext, run_id: str, now: datetime | None = None) -> bool:
    """Tell reapers the run is alive; keep its lease. False once the run is no longer active."""
    ctx.leases.keep(run_id)
    with ctx.engine.begin() as conn:
        return (
            conn.execute(
                sa.update(t.run_state)
                .where(t.run_state.c.run_id == run_id, _ACTIVE)
                .values(heartbeat_at=now or utcnow())
            ).rowcount
            > 0
        )


def resume(ctx: StoreContext, run_id: str, attempt_run_id: str) -> int:
    """Re-activate a failed run whose scan is staged; see ``InventoryStore.resume``."""
    now = utcnow()
    held = ctx.leases.holds(run_id)
    try:
        return _resume(ctx, run_id, attempt_run_id, now)
    except BaseException:
        if not held:
            ctx.leases.release([run_id])
        raise


def _resume(ctx: StoreContext, run_id: str, attempt_run_id: str, now: datetime) -> int:
    with ctx.engine.begin() as conn:
        last_generation = ctx.lock_inventory(conn)
        row = ctx.run_row(conn, run_id, lock=True)
        generation = int(row["generation"])
        if row["status"] == RunStatus.COMPLETED:
            raise StoreError(f"run {run_id} is already completed")
        if row["status"] != RunStatus.ACTIVE:
            _refuse_stale_resume(conn, run_id, generation, last_generation)
        elif not ctx.leases.enabled and _abandon_reason(ctx, conn, row, now) is None:
            # On PostgreSQL taking the lease below is the test; without leases, the pid is.
            raise RunActiveError(run_id, "its holder may still be alive")
        set_run(
            conn,
            run_id,
            status=RunStatus.ACTIVE,
            attempt_run_id=attempt_run_id,
            heartbeat_at=now,
            finished_at=None,
            error=None,
            **this_process(),
            lease=ctx.leases.acquire(run_id, generation),
        )
        return generation


def _refuse_stale_resume(conn: Connection, run_id: str, generation: int, last: int) -> None:
    """A failed run resumes only if it is the newest generation and no run is active."""
    if generation != last:
        raise StoreError(
            f"run {run_id} (generation {generation}) cannot resume: "
            f"generation {last} started after it"
        )
    active = conn.execute(sa.select(t.run_state.c.run_id).where(_ACTIVE)).first()
    if active is not None:
        raise RunActiveError(active[0], "another run holds the inventory")


def complete(ctx: StoreContext, run_id: str) -> str:
    """End the run: ``completed`` iff its flush was verified, else ``failed``."""
    status = _complete(ctx, run_id)
    ctx.leases.release([run_id])  # not on error: a run still active keeps its lease
    return status


def _complete(ctx: StoreContext, run_id: str) -> str:
    now = utcnow()
    with ctx.engine.begin() as conn:
        row = ctx.run_row(conn, run_id, lock=True)
        if row["status"] != RunStatus.ACTIVE:
            return row["status"]
        if row["flush_succeeded"]:
            set_run(conn, run_id, status=RunStatus.COMPLETED, finished_at=now, heartbeat_at=now)
            return RunStatus.COMPLETED.value
        mark_failed(conn, run_id, "flush not verified", now)
        return RunStatus.FAILED.value


def fail(ctx: StoreContext, run_id: str, reason: str) -> bool:
    """Mark an ``active`` run ``failed``. Returns False when it was not active (no change)."""
    with ctx.engine.begin() as conn:
        failed = mark_failed(conn, run_id, reason, utcnow())
    ctx.leases.release([run_id])
    return failed


def mark_failed(conn: Connection, run_id: str, reason: str, now: datetime) -> bool:
    """The one transition out of ``active`` into ``failed``; False if the run was not active."""
    return (
        conn.execute(
            sa.update(t.run_state)
            .where(t.run_state.c.run_id == run_id, _ACTIVE)
            .values(
                status=RunStatus.FAILED,
                flush_succeeded=False,
                error=reason[:4000],
                finished_at=now,
            )
        ).rowcount
        > 0
    )


def fail_attempt(ctx: StoreContext, attempt_run_id: str, reason: str) -> list[str]:
    """Mark failed the active run whose current attempt is Dagster run ``attempt_run_id``."""
    rs = t.run_state
    with ctx.engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(rs.c.run_id).where(
                    _ACTIVE,
                    sa.or_(rs.c.attempt_run_id == attempt_run_id, rs.c.run_id == attempt_run_id),
                )
            )
        ]
        now = utcnow()
        failed = [rid for rid in ids if mark_failed(conn, rid, reason, now)]
    ctx.leases.release(failed)
    return failed


def reap(
    ctx: StoreContext,
    now: datetime | None = None,
    attempt_finished: Callable[[str], bool] | None = None,
) -> list[str]:
    """Mark ``failed`` (``abandoned``) every active run that provably stopped."""
    now = now or utcnow()
    reaped = []
    with ctx.engine.begin() as conn:
        rows = conn.execute(sa.select(t.run_state).where(_ACTIVE))
        for row in rows.mappings().all():
            reason = _abandon_reason(ctx, conn, row, now)
            if reason is None and attempt_finished is not None:
                reason = _orchestrator_ended(row, attempt_finished)
            if reason and mark_failed(conn, row["run_id"], reason, now):
                reaped.append(row["run_id"])
    ctx.leases.release(reaped)
    return reaped


def _orchestrator_ended(row, attempt_finished: Callable[[str], bool]) -> str | None:
    attempt = row["attempt_run_id"] or row["run_id"]
    if attempt_finished(attempt):
        return f"abandoned: orchestrator run {attempt} ended while active"
    return None
