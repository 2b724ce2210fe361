"""Cleanup as plan → apply, and the approval of a blocked cleanup.

The plan counts, scope by scope, what a completed, flush-verified run did not see; the decision
marks the cleanup ``done``, ``blocked`` (deletion guard) or ``noop``; only a ``done`` cleanup
that is not a dry run applies the plan: stale rows are marked missing, and those missing long
enough move to history.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.errors import CleanupRefusedError, StoreError
from enum_pipeline.store.history import move_to_history
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import (
    CleanupResult,
    CleanupStatus,
    RunStatus,
    ScopeCleanup,
    utcnow,
)

# One scope's plan: its counts, and the WHERE clause of its stale (unprotected) rows.
ScopePlan = tuple[ScopeCleanup, Any]


def _under(location_col, prefix: str):
    """SQL: ``location`` is ``prefix`` or lies below it (no LIKE, so no escaping of ``%``/``_``)."""
    return sa.or_(
        location_col == prefix,
        sa.func.substr(location_col, 1, len(prefix) + 1) == prefix.rstrip("/") + "/",
    )


def _cleanup_row(conn: Connection, run_id: str):
    return (
        conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id)).mappings().first()
    )


def cleanup_record(ctx: StoreContext, run_id: str) -> dict[str, Any] | None:
    """The recorded cleanup of ``run_id``, if any."""
    with ctx.engine.connect() as conn:
        row = _cleanup_row(conn, run_id)
    return dict(row) if row else None


def approve_cleanup(ctx: StoreContext, run_id: str, approved_by: str) -> dict[str, Any]:
    """Approve the blocked cleanup of ``run_id`` for the numbers it was blocked with."""
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        row = _cleanup_row(conn, run_id)
        if row is None or row["status"] != CleanupStatus.BLOCKED:
            raise StoreError(f"run {run_id} has no blocked cleanup to approve")
        conn.execute(
            sa.update(t.cleanups)
            .where(t.cleanups.c.run_id == run_id)
            .values(approved_by=approved_by, approved_max=row["candidates"], updated_at=utcnow())
        )
        return dict(row) | {"approved_by": approved_by, "approved_max": row["candidates"]}


def safe_cleanup_old_projects(
    ctx: StoreContext,
    run_id: str,
    policy: CleanupPolicy | None,
    dry_run: bool,
    approved_by: str | None,
) -> CleanupResult:
    """Plan, decide and (unless blocked or a dry run) apply, in one transaction."""
    policy = policy or CleanupPolicy()
    with ctx.engine.begin() as conn:
        result = _cleanup(ctx, conn, run_id, policy, dry_run, approved_by)
        if dry_run:
            conn.rollback()
    return result


def _cleanup(ctx: StoreContext, conn, run_id, policy, dry_run, approved_by) -> CleanupResult:
    now = utcnow()
    ctx.lock_inventory(conn)
    run = ctx.run_row(conn, run_id, lock=True)
    if run["status"] != RunStatus.COMPLETED or not run["flush_succeeded"]:
        raise CleanupRefusedError(
            f"run {run_id} is {run['status']} with flush_succeeded={run['flush_succeeded']}; "
            "only a completed, flush-verified run may clean up"
        )
    generation = int(run["generation"])
    record = _cleanup_row(conn, run_id)
    if record is not None and record["status"] in _FINAL and not dry_run:
        return _already_done(run_id, generation, record)
    approved_max = record["approved_max"] if record is not None else None
    approver = approved_by or (record["approved_by"] if record is not None else None)

    result, plans = plan(conn, run_id, generation, policy, dry_run)
    _decide(result, approved_max, approver)
    if result.status == CleanupStatus.DONE and not dry_run:
        apply(conn, result, plans, policy, now)
    if not dry_run:
        _record_cleanup(conn, result, record is not None, approver, now)
    return result


_FINAL = (CleanupStatus.DONE, CleanupStatus.NOOP)


def _already_done(run_id: str, generation: int, record) -> CleanupResult:
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


# ---------------------------------------------------------------------------------- plan


def plan(
    conn: Connection, run_id: str, generation: int, policy: CleanupPolicy, dry_run: bool
) -> tuple[CleanupResult, list[ScopePlan]]:
    """Count what the cleanup of run ``run_id`` would do, scope by scope; changes nothing."""
    p, s, rs = t.projects, t.staged_projects, t.run_state
    result = CleanupResult(run_id, generation, CleanupStatus.DONE.value, dry_run=dry_run)
    scope_rows = conn.execute(
        sa.select(t.run_scopes).where(t.run_scopes.c.run_id == run_id)
    ).mappings()
    # A newer run that staged a row has seen it, even before (or without) its flush.
    seen_by_newer = (
        sa.select(s.c.project_key)
        .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
        .where(s.c.project_key == p.c.project_key, rs.c.generation > generation)
        .exists()
    )
    stale = sa.and_(
        p.c.seen_generation.is_not(None),
        p.c.seen_generation < generation,
        ~seen_by_newer,
    )
    plans: list[ScopePlan] = []
    for scope in scope_rows.all():
        planned = _plan_scope(conn, scope, generation, policy, stale, result)
        if planned is not None:
            plans.append(planned)
    return result, plans


def _plan_scope(conn, scope, generation, policy, stale, result) -> ScopePlan | None:
    """Count one scope into ``result``; its plan, or None when the scope is skipped."""
    p = t.projects
    sc = ScopeCleanup(scope["scope_key"], bool(scope["complete"]))
    result.scopes.append(sc)
    in_scope = p.c.scope_key == scope["scope_key"]
    skip = _skip_reason(conn, scope, generation)
    if skip:
        sc.skipped_reason = skip
        sc.total, sc.protected = _counts(conn, in_scope, stale)
        result.kept_incomplete += sc.protected
        return None
    protected = [_under(p.c.location, prefix) for prefix in scope["protected"] or []]
    if protected:
        stale_protected = sa.and_(stale, sa.or_(*protected))
        stale = sa.and_(stale, sa.not_(sa.or_(*protected)))
    due = sa.and_(stale, p.c.missed_runs + 1 >= policy.missing_runs_before_delete)
    # One pass over the scope's rows for every count (not one query per count).
    if protected:
        sc.total, sc.protected, sc.candidates, due_count = _counts(
            conn, in_scope, stale_protected, stale, due
        )
        result.kept_incomplete += sc.protected
    else:
        sc.total, sc.candidates, due_count = _counts(conn, in_scope, stale, due)
    sc.blocked_reason = policy.guard(sc.scope_key, due_count, sc.total)
    result.candidates += sc.candidates
    result.removed += due_count
    result.marked_missing += sc.candidates - due_count
    return sc, sa.and_(in_scope, stale)


def _counts(conn: Connection, where, *conditions) -> tuple[int, ...]:
    """``count(*)`` of the rows matching ``where``, then of those also matching each of
    ``conditions``, in one query."""
    p = t.projects
    sums = [sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0) for cond in conditions]
    row = conn.execute(sa.select(sa.func.count(), *sums).select_from(p).where(where)).one()
    return tuple(int(v) for v in row)


def _skip_reason(conn: Connection, scope, generation: int) -> str | None:
    """Why this run must not clean the scope, if at all."""
    if not scope["complete"]:
        return f"scope read incompletely: {scope['reason']}"
    return _scope_skip_reason(conn, scope, generation)


def _completed_reads(scope_key: str):
    """Completed runs that read ``scope_key`` completely, newest first (a SELECT to refine)."""
    rs, sc = t.run_state, t.run_scopes
    return (
        sa.select(rs.c.run_id)
        .select_from(sc.join(rs, rs.c.run_id == sc.c.run_id))
        .where(
            sc.c.scope_key == scope_key,
            sc.c.complete.is_(True),
            rs.c.status == RunStatus.COMPLETED,
        )
        .order_by(rs.c.generation.desc())
        .limit(1)
    )


def _scope_skip_reason(conn: Connection, scope, generation: int) -> str | None:
    """Why a completely read scope must still not be cleaned by this run, if at all."""
    rs, sc = t.run_state, t.run_scopes
    reads = _completed_reads(scope["scope_key"])
    newer = conn.execute(reads.where(rs.c.generation > generation)).scalar()
    if newer:
        return f"superseded: newer completed run {newer} read this scope"
    previous = conn.execute(
        reads.with_only_columns(sc.c.fingerprint, rs.c.run_id).where(rs.c.generation < generation)
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


# ---------------------------------------------------------------------------------- decide


def _decide(result: CleanupResult, approved_max: int | None, approver: str | None) -> None:
    """Set ``result.status``: blocked by the guard unless approved for this many, noop, done."""
    blocked = [sc for sc in result.scopes if sc.blocked_reason]
    if blocked and approved_max is not None and result.removed <= approved_max:
        result.reason = f"approved by {approver} for up to {approved_max} removals"
        for sc in blocked:
            sc.blocked_reason = None
        blocked = []
    if blocked:
        result.status = CleanupStatus.BLOCKED.value
        result.reason = "; ".join(sc.blocked_reason for sc in blocked)
    elif result.candidates == 0:
        result.status = CleanupStatus.NOOP.value
        result.reason = result.reason or "nothing to remove"


# ---------------------------------------------------------------------------------- apply


def apply(
    conn: Connection,
    result: CleanupResult,
    plans: list[ScopePlan],
    policy: CleanupPolicy,
    now: datetime,
) -> None:
    """Mark the planned stale rows missing and move those missing long enough to history."""
    removed_total, marked_total = 0, 0
    for sc, stale in plans:
        if sc.candidates == 0:
            continue
        keys = _apply_scope(conn, sc, stale, policy, result.run_id, now)
        removed_total += sc.removed
        marked_total += sc.marked_missing
        result.removed_keys.extend(keys)
    result.removed, result.marked_missing = removed_total, marked_total
    result.candidates = sum(sc.candidates for sc, _ in plans)
    set_run(conn, result.run_id, removed_count=removed_total)


def _apply_scope(conn, sc: ScopeCleanup, stale, policy, run_id: str, now) -> list[str]:
    p = t.projects
    marked = conn.execute(
        sa.update(p)
        .where(stale)
        .values(
            missed_runs=p.c.missed_runs + 1,
            missing_since=sa.func.coalesce(p.c.missing_since, now),
        )
    ).rowcount
    due = sa.and_(stale, p.c.missed_runs >= policy.missing_runs_before_delete)
    keys = move_to_history(conn, due, run_id, now)
    # A concurrent flush may have refreshed some counted candidates meanwhile
    # (PostgreSQL re-checks the WHERE on rows it waited for): count what was done.
    sc.candidates = marked
    sc.removed = len(keys)
    sc.marked_missing = marked - sc.removed
    return keys


def _record_cleanup(conn, result: CleanupResult, exists: bool, approver, now) -> None:
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
    if result.status != CleanupStatus.BLOCKED:
        values["approved_by"] = approver
    if exists:
        conn.execute(
            sa.update(t.cleanups).where(t.cleanups.c.run_id == result.run_id).values(**values)
        )
    else:
        conn.execute(sa.insert(t.cleanups).values(run_id=result.run_id, **values))
