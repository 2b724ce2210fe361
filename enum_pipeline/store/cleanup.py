"""Cleanup as plan → apply, and the approval of a blocked cleanup.

``plan.plan_cleanup`` names every project the cleanup touches (``remove``, ``mark_missing`` or
``keep``, each with its reason); the decision marks the cleanup ``done``, ``blocked`` (deletion
guard) or ``noop``. Before the transaction, the rows due for removal go to the ``witness`` (the
sources, looking at each project directly, at most the policy's ``confirm_budget``): only a
confirmed absence, taken after the run's read, is removed; without a witness nothing is.
A cleanup that is not a dry run writes the plan's marks (out of coverage,
orphaned) and persists the plan (``cleanup_entries``), so a blocked cleanup can be shown and an
approval approves exactly its listed removals; only a ``done`` one removes. The policy is the one
recorded when the run began, whoever requests the cleanup: a request can approve, never loosen.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.sources.witness import Witness
from enum_pipeline.store import claims
from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.entries import approved_keys, load_entries, save_entries
from enum_pipeline.store.errors import CleanupRefusedError
from enum_pipeline.store.plan import Witnessed, apply_marks, apply_removals, plan_cleanup
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import (
    CleanupEntry,
    CleanupRecord,
    CleanupResult,
    CleanupStatus,
    RunStatus,
    utcnow,
)


def _cleanup_row(conn: Connection, run_id: str):
    return (
        conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id)).mappings().first()
    )


def cleanup_record(ctx: StoreContext, run_id: str) -> CleanupRecord | None:
    """The recorded cleanup of ``run_id``, if any."""
    with ctx.engine.connect() as conn:
        row = _cleanup_row(conn, run_id)
    return CleanupRecord.from_row(row) if row else None


def cleanup_entries(ctx: StoreContext, run_id: str) -> list[CleanupEntry]:
    """The persisted plan of the cleanup (or orphan prune) ``run_id``: removals first."""
    with ctx.engine.connect() as conn:
        return load_entries(conn, run_id)


def approve_cleanup(
    ctx: StoreContext, run_id: str, approved_by: str, plan_id: str | None = None
) -> dict[str, Any]:
    """Approve the blocked cleanup of ``run_id``: exactly the removals its persisted plan lists,
    and only while that plan is ``plan_id`` (None: the plan as it is now)."""
    ce = t.cleanup_entries
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        plan = claims.check_plan(conn, run_id, plan_id)
        row = _cleanup_row(conn, run_id)
        listed = conn.execute(
            sa.update(ce)
            .where(ce.c.run_id == run_id, ce.c.action == "remove")
            .values(approved=True)
        ).rowcount
        conn.execute(
            sa.update(t.cleanups)
            .where(t.cleanups.c.run_id == run_id)
            .values(approved_by=approved_by, approved_max=listed, updated_at=utcnow())
        )
        return dict(row) | {
            "approved_by": approved_by,
            "approved_max": listed,
            "plan_id": plan.plan_id,
        }


def run_policy(run, fallback: CleanupPolicy | None = None) -> CleanupPolicy:
    """The policy recorded when ``run`` began (runs begun before 0004: ``fallback`` or the
    defaults)."""
    if run["policy"] is not None:
        return CleanupPolicy.model_validate(run["policy"])
    return fallback or CleanupPolicy()


log = logging.getLogger(__name__)


def safe_cleanup_old_projects(
    ctx: StoreContext,
    run_id: str,
    policy: CleanupPolicy | None,
    dry_run: bool,
    approved_by: str | None,
    witness: Witness | None = None,
    claimant: str | None = None,
) -> CleanupResult:
    """Gather the witness's confirmations, then plan, decide and (unless blocked or a dry run)
    apply, in one transaction.

    With ``claimant`` (not a dry run) the cleanup first claims the run's flush: when another
    requester claimed it already, this one does nothing and its result names that one.
    """
    claiming = claimant is not None and not dry_run
    if claiming:
        held = claims.claim(ctx, run_id, claimant)
        if held.claimed_by != claimant:
            return claims.claimed_elsewhere(ctx, run_id, held)
    try:
        witnessed = gather_confirmations(ctx, run_id, policy, witness, dry_run=dry_run)
        with ctx.engine.begin() as conn:
            result = _cleanup(ctx, conn, run_id, policy, dry_run, approved_by, witnessed)
            if dry_run:
                conn.rollback()
    except BaseException:
        if claiming:
            claims.release(ctx, run_id, claimant)
        raise
    result.claimed_by = claimant if claiming else None
    return result


def gather_confirmations(
    ctx: StoreContext,
    run_id: str,
    requested: CleanupPolicy | None,
    witness: Witness | None,
    *,
    dry_run: bool = False,
) -> Witnessed:
    """Plan once without confirmations (nothing written) to learn which rows are due for
    removal, then ask ``witness`` about at most the policy's ``confirm_budget`` of them.

    Outside any transaction: a witness's look may take time (a request per repository), and
    the cleanup's own transaction re-plans and re-checks every row anyway.
    """
    with ctx.engine.connect() as conn:
        run = ctx.run_row(conn, run_id)
        record = _cleanup_row(conn, run_id)
        if (
            run["status"] != RunStatus.COMPLETED
            or not run["flush_succeeded"]
            or (record is not None and record["status"] in _FINAL and not dry_run)
        ):
            return Witnessed()  # refused, or carried out already: nothing to look at
        policy = run_policy(run, requested)
        plan, _ = plan_cleanup(
            conn, run, policy, newest=_newest(conn, int(run["generation"])), candidates_only=True
        )
        conn.rollback()
    if witness is None:
        return Witnessed(
            default="no witness was given to this cleanup: nothing confirms the absence"
        )
    budget = policy.confirm_budget
    asked, over = plan.awaiting[:budget], plan.awaiting[budget:]
    witnessed = Witnessed(
        pending={
            c.project_key: f"over this cleanup's confirmation budget ({budget}): a later "
            "cleanup looks at it"
            for c in over
        },
        default="its witness gave no answer",
    )
    wanted = {c.project_key for c in asked}
    try:
        for confirmation in witness.confirm(asked) if asked else ():
            if confirmation.project_key in wanted:
                witnessed.confirmations[confirmation.project_key] = confirmation
    except Exception as exc:  # noqa: BLE001 - a failed witness keeps what it did not answer
        log.warning("witness of the cleanup of run %s failed: %s", run_id, exc)
        witnessed.default = f"its witness failed: {type(exc).__name__}: {exc}"
    return witnessed


_FINAL = (CleanupStatus.DONE, CleanupStatus.NOOP)


def _newest(conn: Connection, generation: int) -> bool:
    rs = t.run_state
    newer = conn.execute(
        sa.select(rs.c.run_id)
        .where(rs.c.generation > generation, rs.c.status == RunStatus.COMPLETED)
        .limit(1)
    ).first()
    return newer is None


def _cleanup(
    ctx: StoreContext, conn, run_id, requested, dry_run, approved_by, witnessed: Witnessed
) -> CleanupResult:
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
    approver = approved_by or (record["approved_by"] if record is not None else None)
    policy = run_policy(run, requested)

    plan, scopes = plan_cleanup(
        conn, run, policy, newest=_newest(conn, generation), witnessed=witnessed
    )
    result = CleanupResult(run_id, generation, CleanupStatus.DONE.value, dry_run=dry_run)
    result.scopes = scopes
    result.entries = plan.entries
    result.candidates = plan.candidates
    result.would_remove = len(plan.remove)
    result.kept_incomplete = plan.kept_incomplete
    result.out_of_coverage = len(plan.out_of_coverage)
    result.orphaned = len(plan.orphans)
    result.held = plan.held
    result.unconfirmed = plan.unconfirmed
    result.found_present = plan.found_present
    approved = approved_keys(conn, run_id)
    _decide(result, plan.remove, approved, approver)

    if not dry_run:
        apply_marks(conn, plan, now)
    if result.status == CleanupStatus.DONE and not dry_run:
        removed, marked = apply_removals(conn, plan, run, policy, now)
        result.removed_keys = removed
        result.removed, result.marked_missing = len(removed), marked
        result.candidates = len(removed) + marked
        done = set(removed)
        for sc in result.scopes:
            sc.removed = sum(
                1 for e in plan.entries if e.scope_key == sc.scope_key and e.project_key in done
            )
        set_run(conn, run_id, removed_count=len(removed))
    if not dry_run:
        save_entries(conn, run_id, plan.entries, approved)
        _record_cleanup(conn, result, record is not None, approver, now)
    return result


def _decide(result: CleanupResult, remove: list[str], approved: set[str], approver) -> None:
    """``blocked`` when a scope trips the guard and the plan is not the approved one, else
    ``done`` (or ``noop`` with nothing to do). Nothing is counted removed until applied."""
    blocked = [sc for sc in result.scopes if sc.blocked_reason]
    if blocked and set(remove) <= approved:
        result.reason = f"approved by {approver} for the {len(approved)} projects its plan listed"
        for sc in blocked:
            sc.blocked_reason = None
        blocked = []
    if blocked:
        result.status = CleanupStatus.BLOCKED.value
        result.reason = "; ".join(sc.blocked_reason for sc in blocked)
        result.plan_id = claims.plan_id(result.run_id, remove)
        if approved:
            extra = len(set(remove) - approved)
            result.reason += f" ({extra} projects not in the approved plan)"
    elif result.candidates == 0:
        result.status = CleanupStatus.NOOP.value
        result.reason = result.reason or "nothing to remove"
    for sc in result.scopes:  # counted again from what is applied
        sc.removed = 0
        if result.status != CleanupStatus.DONE or result.dry_run:
            sc.marked_missing = 0


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


def _record_cleanup(conn, result: CleanupResult, exists: bool, approver, now: datetime) -> None:
    values = {
        "generation": result.generation,
        "status": result.status,
        "candidates": result.candidates,
        "removed": result.removed,
        "marked_missing": result.marked_missing,
        "reason": result.reason,
        "details": {
            "scopes": [asdict(sc) for sc in result.scopes],
            "would_remove": result.would_remove,
            "out_of_coverage": result.out_of_coverage,
            "orphaned": result.orphaned,
            "held": result.held,
            "unconfirmed": result.unconfirmed,
            "found_present": result.found_present,
            "plan_id": result.plan_id,
        },
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
