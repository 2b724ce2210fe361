"""Staging: what a run saw, written as it scans (stage, end_scope), and pruned after."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.records import RunStatus, utcnow
from enum_pipeline.store.runs import heartbeat


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
        **{c: getattr(record, c) for c in t.PRODUCT_COLUMNS},
        "topics": list(record.topics) if record.topics is not None else None,
    }


def stage(ctx: StoreContext, run_id: str, records: Iterable[ProjectRecord]) -> int:
    """Durably stage a batch of records for ``run_id``; returns how many were new.

    A key seen twice in one run (overlapping roots) is kept once, first sighting wins.
    """
    rows = [_record_row(run_id, r) for r in records]
    if not rows:
        heartbeat(ctx, run_id)
        return 0
    with ctx.engine.begin() as conn:
        ctx.require_active(conn, run_id)
        inserted = ctx.dialect.stage_rows(conn, run_id, rows)
        set_run(
            conn,
            run_id,
            scanned_count=t.run_state.c.scanned_count + len(rows),
            staged_count=t.run_state.c.staged_count + inserted,
            heartbeat_at=utcnow(),
        )
    return inserted


def end_scope(ctx: StoreContext, run_id: str, verdict: ScopeVerdict) -> None:
    """Record how the run ended one scope (complete or not, why, what is protected)."""
    with ctx.engine.begin() as conn:
        ctx.require_active(conn, run_id)
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
            ctx.dialect.insert(t.run_scopes)
            .values(run_id=run_id, scope_key=verdict.scope_key, **values)
            .on_conflict_do_update(index_elements=["run_id", "scope_key"], set_=values)
        )
        conn.execute(stmt)


def prune_staging(ctx: StoreContext, keep_runs: int = 3) -> int:
    """Drop staged rows of finished runs except the newest ``keep_runs``; returns rows."""
    rs, s = t.run_state, t.staged_projects
    with ctx.engine.begin() as conn:
        keep = sa.select(rs.c.run_id).order_by(rs.c.generation.desc())
        keep_ids = list(conn.execute(keep.limit(keep_runs)).scalars())
        active = sa.select(rs.c.run_id).where(rs.c.status == RunStatus.ACTIVE)
        return conn.execute(
            sa.delete(s).where(s.c.run_id.not_in(keep_ids), s.c.run_id.not_in(active))
        ).rowcount
