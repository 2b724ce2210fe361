"""Orphans: rows no configured scope reads any more (or that a configuration change put outside
coverage). Cleanups keep and mark them; only ``prune_orphans`` removes them, explicitly, under the
deletion guard, into history (restorable with the prune's id)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.batch import chunks
from enum_pipeline.store.entries import load_entries, save_entries
from enum_pipeline.store.history import move_to_history
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import CleanupEntry, CleanupResult, ScopeCleanup, utcnow


def _marked(scope_key: str | None):
    p = t.projects
    where = sa.or_(p.c.orphaned_since.is_not(None), p.c.out_of_coverage_since.is_not(None))
    return sa.and_(where, p.c.scope_key == scope_key) if scope_key else where


def kept_rows(conn: Connection, scope_key: str | None = None) -> list[dict[str, Any]]:
    """Rows marked orphaned or out of coverage, by key."""
    p = t.projects
    cols = [
        p.c.project_key,
        p.c.name,
        p.c.scope_key,
        p.c.location,
        p.c.orphaned_since,
        p.c.orphan_reason,
        p.c.out_of_coverage_since,
        p.c.out_of_coverage_reason,
    ]
    stmt = sa.select(*cols).where(_marked(scope_key)).order_by(p.c.project_key)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def current_policy(conn: Connection) -> CleanupPolicy:
    """The policy recorded by the newest completed run (the configuration in force), else the
    defaults."""
    rs = t.run_state
    recorded = conn.execute(
        sa.select(rs.c.policy)
        .where(rs.c.status == "completed", rs.c.policy.is_not(None))
        .order_by(rs.c.generation.desc())
        .limit(1)
    ).scalar()
    return CleanupPolicy.model_validate(recorded) if recorded else CleanupPolicy()


def prune_orphans(
    conn: Connection,
    last_generation: int,
    *,
    dry_run: bool = False,
    approved_by: str | None = None,
    scope_key: str | None = None,
) -> CleanupResult:
    """Remove the rows marked orphaned or out of coverage (of ``scope_key``, or all), into
    history under a new prune id. The deletion guard of the newest completed run's policy holds
    the prune back unless ``approved_by`` is given. Nothing is written when ``dry_run`` or
    blocked (a blocked prune is listed, not persisted)."""
    now = utcnow()
    prune_id = f"prune-{uuid.uuid4().hex}"
    policy = current_policy(conn)
    rows = kept_rows(conn, scope_key)
    result = CleanupResult(prune_id, last_generation, "noop", dry_run=dry_run)
    for r in rows:
        reason = r["orphan_reason"] or f"out of coverage: {r['out_of_coverage_reason']}"
        result.entries.append(
            CleanupEntry(
                r["project_key"], r["name"], r["scope_key"], r["location"], "remove", reason
            )
        )
    p = t.projects
    per_scope = Counter(r["scope_key"] for r in rows)
    for scope, n in sorted(per_scope.items()):
        size = conn.execute(
            sa.select(sa.func.count()).select_from(p).where(p.c.scope_key == scope)
        ).scalar_one()
        sc = ScopeCleanup(scope, True, total=int(size), candidates=n)
        sc.blocked_reason = policy.guard(scope, n, int(size))
        result.scopes.append(sc)
    result.candidates = result.would_remove = len(rows)
    blocked = [sc.blocked_reason for sc in result.scopes if sc.blocked_reason]
    if not rows:
        result.reason = "no orphaned or out-of-coverage rows"
        return result
    if blocked and not approved_by:
        result.status = "blocked"
        result.reason = "; ".join(blocked) + " — prune again with approval to remove them"
        return result
    result.status = "done"
    if blocked:
        result.reason = f"approved by {approved_by}: " + "; ".join(blocked)
    if dry_run:
        return result
    reasons = {e.project_key: e.reason for e in result.entries}
    keys = [r["project_key"] for r in rows]
    removed = []
    for chunk in chunks(keys):  # each statement binds at most CHUNK keys
        removed += move_to_history(
            conn, sa.and_(p.c.project_key.in_(chunk), _marked(scope_key)), prune_id, now, reasons
        )
    result.removed_keys = removed
    result.removed = len(removed)
    scope_of = {r["project_key"]: r["scope_key"] for r in rows}
    gone = Counter(scope_of[k] for k in removed)
    for sc in result.scopes:
        sc.removed = gone[sc.scope_key]
    save_entries(conn, prune_id, result.entries, set())
    return result


__all__ = ["current_policy", "kept_rows", "load_entries", "prune_orphans"]
