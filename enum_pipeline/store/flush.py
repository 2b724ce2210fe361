"""Flush and verify: the staged view into ``projects``, then the proof that it arrived."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.errors import FlushVerificationError
from enum_pipeline.store.records import FlushResult, VerifyResult, utcnow

_DATA_COLS = ["project_key", *t.PROJECT_DATA_COLUMNS]
_STAMP_COLS = [
    "run_id",
    "seen_generation",
    "first_seen_at",
    "last_seen_at",
    "changed_at",
    "missed_runs",
]


def flush(ctx: StoreContext, run_id: str) -> FlushResult:
    """Upsert the run's staged records into ``projects`` in one set-based statement.

    A row last seen by a newer generation is never overwritten (fencing).
    """
    now = utcnow()
    with ctx.engine.begin() as conn:
        run = ctx.require_active(conn, run_id)
        generation = int(run["generation"])
        staged, matched, changed = _flush_counts(conn, run_id)
        conn.execute(_upsert(ctx, run_id, generation, now))
        result = FlushResult(
            run_id=run_id,
            generation=generation,
            staged=staged,
            added=staged - matched,
            changed=changed,
            unchanged=matched - changed,
        )
        set_run(
            conn,
            run_id,
            flushed_count=result.staged,
            added_count=result.added,
            changed_count=result.changed,
            unchanged_count=result.unchanged,
            heartbeat_at=utcnow(),
        )
    return result


def _flush_counts(conn: Connection, run_id: str) -> tuple[int, int, int]:
    """(staged rows, of those already in ``projects``, of those with new content)."""
    p, s = t.projects, t.staged_projects
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
    return int(staged), int(existing[0]), int(existing[1])


def _upsert(ctx: StoreContext, run_id: str, generation: int, now: datetime):
    """INSERT … SELECT from staging, ON CONFLICT update unless a newer generation saw the row."""
    p, s = t.projects, t.staged_projects
    select = sa.select(
        *[s.c[c] for c in _DATA_COLS],
        sa.literal(run_id).label("run_id"),
        sa.literal(generation).label("seen_generation"),
        sa.literal(now, t.UTCDateTime()).label("first_seen_at"),
        sa.literal(now, t.UTCDateTime()).label("last_seen_at"),
        sa.literal(now, t.UTCDateTime()).label("changed_at"),
        sa.literal(0).label("missed_runs"),
    ).where(s.c.run_id == run_id)
    insert = ctx.dialect.insert(p).from_select([*_DATA_COLS, *_STAMP_COLS], select)
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
    return insert.on_conflict_do_update(
        index_elements=["project_key"],
        set_=update,
        where=sa.or_(
            p.c.seen_generation.is_(None),
            p.c.seen_generation <= excluded.seen_generation,
        ),
    )


def verify_and_confirm(ctx: StoreContext, run_id: str) -> VerifyResult:
    """Prove the flush: every staged key is in ``projects`` with this run's generation.

    Only then set ``last_confirmed_run_id`` on those rows and ``flush_succeeded`` on the run,
    in the same transaction. Raises ``FlushVerificationError`` otherwise.
    """
    p = t.projects
    with ctx.engine.begin() as conn:
        run = ctx.require_active(conn, run_id)
        generation = int(run["generation"])
        staged, present, stamped = _verify_counts(conn, run_id, generation)
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
        set_run(
            conn, run_id, flush_succeeded=True, confirmed_count=confirmed, heartbeat_at=utcnow()
        )
    return VerifyResult(run_id, generation, int(staged), int(present), int(confirmed), True)


def _verify_counts(conn: Connection, run_id: str, generation: int) -> tuple[int, int, int]:
    """(staged rows, of those present with this generation and content, rows stamped with it)."""
    p, s = t.projects, t.staged_projects
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
    return staged, present, stamped
