"""The run state machine: begin, heartbeat, resume, complete, fail, reap.

``active`` → ``completed`` (flush verified) or ``failed`` (any error, or abandoned: its holder
provably stopped); a ``failed`` run of the newest generation may be resumed to ``active``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.errors import RunActiveError, StoreError
from enum_pipeline.store.identity import settle_trust
from enum_pipeline.store.liveness import LOCAL_HOLDERS, abandon_reason, this_process
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import RunStatus, utcnow

_ACTIVE = t.run_state.c.status == RunStatus.ACTIVE


def begin(
    ctx: StoreContext,
    run_id: str,
    now: datetime | None = None,
    policy: CleanupPolicy | None = None,
    configured_scopes: Iterable[str] | None = None,
    scopes: Iterable[str] | None = None,
) -> int:
    """Start run ``run_id`` and return its generation; see ``InventoryStore.begin``."""
    now = now or utcnow()
    claimed = sorted(set(scopes)) if scopes is not None else None
    leased = False
    refusal: RunActiveError | None = None
    try:
        with ctx.engine.begin() as conn:
            # Every begin takes the inventory lock: generations stay globally monotonic and
            # two overlapping begins cannot both see the other absent.
            last_generation = ctx.lock_inventory(conn)
            _refuse_reused_id(conn, run_id)
            refusal = _abandon_or_refuse_overlapping(ctx, conn, claimed, now)
            if refusal is None:
                generation = last_generation + 1
                conn.execute(
                    sa.update(t.inventory)
                    .where(t.inventory.c.id == 1)
                    .values(last_generation=generation)
                )
                # Taken before the row is visible, so nobody sees this run without its lease.
                lease = ctx.leases.acquire(run_id, generation)
                leased = True
                _insert_run(conn, run_id, generation, lease, now, claimed)
                set_run(
                    conn,
                    run_id,
                    policy=(policy or CleanupPolicy()).model_dump(mode="json"),
                    configured_scopes=(
                        sorted(set(configured_scopes)) if configured_scopes is not None else None
                    ),
                )
    except BaseException:
        if leased:
            ctx.leases.release([run_id])
        raise
    if refusal is not None:
        raise refusal  # after the commit: the overlapping runs found abandoned stay failed
    _release_finished(ctx, exclude=run_id)
    return generation


def overlap(held: Iterable[str] | None, wanted: Iterable[str] | None) -> str | None:
    """What two runs' scope sets share, as the refusal names it ("scope KEY" or "the whole
    inventory"), or None when they are disjoint; None as a set is the whole inventory."""
    if held is None and wanted is None:
        return "the whole inventory"
    if held is None or wanted is None:
        named = sorted(set(wanted if held is None else held))
        return f"scope {named[0]}" if named else None
    shared = sorted(set(held) & set(wanted))
    return f"scope {shared[0]}" if shared else None


def _release_finished(ctx: StoreContext, exclude: str) -> None:
    """Drop the leases this process still holds for runs that are no longer active (failed
    by a sweeper, say); the leases of its other active runs stay."""
    held = [r for r in ctx.leases.held() if r != exclude]
    if not held:
        return
    rs = t.run_state
    with ctx.engine.connect() as conn:
        still = set(
            conn.execute(sa.select(rs.c.run_id).where(rs.c.run_id.in_(held), _ACTIVE)).scalars()
        )
    ctx.leases.release([r for r in held if r not in still])


def _refuse_reused_id(conn: Connection, run_id: str) -> None:
    existing = conn.execute(
        sa.select(t.run_state.c.run_id).where(t.run_state.c.run_id == run_id)
    ).first()
    if existing is not None:
        raise StoreError(f"run {run_id} already exists; a run id is used once")


def _abandon_or_refuse_overlapping(
    ctx: StoreContext, conn: Connection, claimed: list[str] | None, now: datetime
) -> RunActiveError | None:
    """Fail every active run over a scope of ``claimed`` whose holder provably stopped; the
    refusal naming the first one still alive, if any."""
    refusal = None
    for active in _active_rows(conn):
        shared = overlap(active["scopes"], claimed)
        if shared is None:
            continue
        reason = _abandon_reason(ctx, conn, active, now)
        if reason is not None:
            mark_failed(conn, active["run_id"], reason, now)
        elif refusal is None:
            refusal = _refusal(active, shared, now)
    return refusal


def _active_rows(conn: Connection):
    rs = t.run_state
    return conn.execute(sa.select(rs).where(_ACTIVE).order_by(rs.c.generation)).mappings().all()


def _refusal(active, shared: str, now: datetime) -> RunActiveError:
    age = (now - active["heartbeat_at"]).total_seconds()
    return RunActiveError(
        active["run_id"],
        f"heartbeat {age:.0f}s ago on host {active['host']} pid {active['pid']}",
        scope=shared,
    )


def _insert_run(
    conn: Connection, run_id: str, generation: int, lease, now: datetime, scopes
) -> None:
    conn.execute(
        sa.insert(t.run_state).values(
            run_id=run_id,
            generation=generation,
            scopes=scopes,
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
        ctx.lock_inventory(conn)
        row = ctx.run_row(conn, run_id, lock=True)
        generation = int(row["generation"])
        if row["status"] == RunStatus.COMPLETED:
            raise StoreError(f"run {run_id} is already completed")
        if row["status"] != RunStatus.ACTIVE:
            _refuse_stale_resume(conn, row, now)
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


def _refuse_stale_resume(conn: Connection, row, now: datetime) -> None:
    """A failed run resumes only if no run over a scope of it is active, and none began after
    it."""
    rs = t.run_state
    run_id, generation = row["run_id"], int(row["generation"])
    for active in _active_rows(conn):
        shared = overlap(active["scopes"], row["scopes"])
        if shared is not None:
            raise _refusal(active, shared, now)
    newer = conn.execute(
        sa.select(rs.c.generation, rs.c.scopes)
        .where(rs.c.generation > generation)
        .order_by(rs.c.generation.desc())
    ).mappings()
    for other in newer:
        if overlap(other["scopes"], row["scopes"]) is not None:
            raise StoreError(
                f"run {run_id} (generation {generation}) cannot resume: "
                f"generation {other['generation']} started after it over its scopes"
            )
    s = t.staged_projects
    left = conn.execute(
        sa.select(sa.func.count()).select_from(s).where(s.c.run_id == run_id)
    ).scalar_one()
    if int(left) != int(row["staged_count"] or 0):
        raise StoreError(
            f"run {run_id} (generation {generation}) cannot resume: its staging was pruned "
            f"({left} of the {row['staged_count']} rows it staged are left), so what it scanned "
            "is gone; begin a new run"
        )


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
            settle_trust(conn, run_id, int(row["generation"]))
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
