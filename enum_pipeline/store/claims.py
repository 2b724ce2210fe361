"""One cleanup per confirmed flush, and the stable id of a blocked plan.

A cleanup that claims (``safe_cleanup_old_projects(claimant=…)``) inserts the run's row of
``cleanup_claims`` under the inventory lock before it looks at anything; a later request for the
same run, from any process, finds the row and does nothing but name the holder. A claim is
released only when its own cleanup raised before recording an outcome.

A blocked plan's id is a digest of the run and the keys it would remove: the same plan keeps its
id however often it is shown, and an approval names the plan it approves (``check_plan``).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext
from enum_pipeline.store.errors import CleanupRefusedError, PlanChangedError, StoreError
from enum_pipeline.store.records import (
    BlockedPlan,
    CleanupClaim,
    CleanupResult,
    CleanupStatus,
    RunStatus,
    utcnow,
)

PLAN_ID_LENGTH = 12


def plan_id(run_id: str, remove_keys) -> str:
    """The id of the plan of ``run_id`` that removes ``remove_keys`` (order does not matter)."""
    text = "\n".join([run_id, *sorted(remove_keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:PLAN_ID_LENGTH]


def _current_plan(conn: Connection, run_id: str) -> BlockedPlan | None:
    row = (
        conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id)).mappings().first()
    )
    if row is None or row["status"] != CleanupStatus.BLOCKED:
        return None
    ce = t.cleanup_entries
    keys = conn.execute(
        sa.select(ce.c.project_key).where(ce.c.run_id == run_id, ce.c.action == "remove")
    ).scalars()
    keys = list(keys)
    return BlockedPlan(run_id, plan_id(run_id, keys), len(keys), row["reason"])


def blocked_plan(ctx: StoreContext, run_id: str) -> BlockedPlan | None:
    """The blocked plan of ``run_id`` as persisted now, or None (its cleanup is not blocked)."""
    with ctx.engine.connect() as conn:
        return _current_plan(conn, run_id)


def check_plan(conn: Connection, run_id: str, given: str | None) -> BlockedPlan:
    """The blocked plan of ``run_id`` an approval of plan ``given`` approves (None: whichever it
    is now); a ``StoreError`` when there is none, ``PlanChangedError`` when it is another."""
    current = _current_plan(conn, run_id)
    if current is None:
        raise StoreError(f"run {run_id} has no blocked cleanup to approve")
    if given is not None and given != current.plan_id:
        raise PlanChangedError(
            f"plan {given} is not the blocked plan of run {run_id}: that is plan "
            f"{current.plan_id} now ({current.would_remove} projects), so nothing was approved; "
            "review it and approve it by its id"
        )
    return current


def cleanup_claim(ctx: StoreContext, run_id: str) -> CleanupClaim | None:
    """Who claimed the cleanup of ``run_id``, if anyone."""
    with ctx.engine.connect() as conn:
        row = (
            conn.execute(sa.select(t.cleanup_claims).where(t.cleanup_claims.c.run_id == run_id))
            .mappings()
            .first()
        )
    return CleanupClaim.from_row(row) if row else None


def claim(ctx: StoreContext, run_id: str, claimant: str) -> CleanupClaim:
    """Claim the cleanup of ``run_id`` for ``claimant``, or return the claim another holds.

    Under the inventory lock, so of two processes asking at once exactly one wins. Refused
    (``CleanupRefusedError``, nothing claimed) unless the run completed with a verified flush.
    """
    cc = t.cleanup_claims
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        run = ctx.run_row(conn, run_id)
        if run["status"] != RunStatus.COMPLETED or not run["flush_succeeded"]:
            raise CleanupRefusedError(
                f"run {run_id} is {run['status']} with flush_succeeded="
                f"{run['flush_succeeded']}; only a completed, flush-verified run may clean up"
            )
        row = conn.execute(sa.select(cc).where(cc.c.run_id == run_id)).mappings().first()
        if row is not None:
            return CleanupClaim.from_row(row)
        held = CleanupClaim(run_id, claimant, utcnow())
        conn.execute(sa.insert(cc).values(**held.to_dict()))
        return held


def release(ctx: StoreContext, run_id: str, claimant: str) -> None:
    """Give back ``claimant``'s claim on ``run_id`` when its cleanup recorded no outcome."""
    cc, c = t.cleanup_claims, t.cleanups
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        if conn.execute(sa.select(c.c.run_id).where(c.c.run_id == run_id)).first() is None:
            conn.execute(sa.delete(cc).where(cc.c.run_id == run_id, cc.c.claimed_by == claimant))


def claimed_elsewhere(ctx: StoreContext, run_id: str, held: CleanupClaim) -> CleanupResult:
    """The no-op result of a request whose flush's cleanup ``held`` claimed first: the outcome
    recorded so far (``noop`` while the holder still works), naming the holder."""
    with ctx.engine.connect() as conn:
        run = ctx.run_row(conn, run_id)
        row = conn.execute(sa.select(t.cleanups).where(t.cleanups.c.run_id == run_id)).mappings()
        record = row.first()
        plan = _current_plan(conn, run_id)
    status = record["status"] if record is not None else CleanupStatus.NOOP.value
    outcome = "it has not ended yet"
    if record is not None:
        why = f": {record['reason']}" if record["reason"] else ""
        outcome = f"it ended {record['status']}{why}"
    return CleanupResult(
        run_id,
        int(run["generation"]),
        status,
        candidates=record["candidates"] if record is not None else 0,
        removed=record["removed"] if record is not None else 0,
        marked_missing=record["marked_missing"] if record is not None else 0,
        would_remove=plan.would_remove if plan is not None else 0,
        reason=(
            f"the cleanup of run {run_id} is {held.claimed_by}'s (claimed "
            f"{held.claimed_at:%Y-%m-%d %H:%M:%S} UTC; {outcome}); this request did nothing"
        ),
        already_done=True,
        plan_id=plan.plan_id if plan is not None else None,
        claimed_by=held.claimed_by,
    )
