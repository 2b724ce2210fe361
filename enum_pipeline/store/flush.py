"""Flush and verify: the staged view into ``projects``, then the proof that it arrived.

One write a row a run: the flush's single upsert sets, on every row the run saw, its data (when
it changed), the run's stamps (``run_id``, ``seen_generation``, ``last_seen_at``) *and* its
confirmation (``last_confirmed_run_id``, ``confirmed_generation``), and in the same transaction
proves from the statement's own result that it wrote every staged row — else the transaction
rolls back, so a confirmation is never visible without the write it confirms. No index covers a
column the upsert rewrites, so an unchanged row's update is heap-only (schema.py). The verify
step then re-reads ``projects`` against the staging, changes no project row, and only then sets
``flush_succeeded`` — the run's proof, which completion and cleanup require.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.errors import FlushVerificationError
from enum_pipeline.store.records import FlushResult, VerifyResult, utcnow

_DATA_COLS = ["project_key", *t.HASHED_COLUMNS]
_STAMP_COLS = [
    "run_id",
    "seen_generation",
    "last_confirmed_run_id",
    "confirmed_generation",
    "first_seen_at",
    "last_seen_at",
    "changed_at",
    "missed_runs",
    "first_seen_generation",
]


def flush(ctx: StoreContext, run_id: str) -> FlushResult:
    """Upsert the run's staged records into ``projects`` and confirm them, in one statement.

    A row last seen by a newer generation is never overwritten (fencing). The counts come from
    the upsert itself. Before the confirmations can commit, the transaction proves them: every
    staged row was written by the upsert, and carries the run's generation and confirmation,
    or was fenced off by a newer run that saw and confirmed it (``superseded``: runs over
    disjoint scopes are active at once, and a project may move between their scopes).
    Otherwise (a row fenced by an unconfirmed write, a write the database dropped) the
    confirmed upsert is rolled back to its savepoint and the rows go in unconfirmed, as before
    confirmation was folded in, and ``verify_and_confirm`` fails.
    """
    now = utcnow()
    with ctx.engine.begin() as conn:
        run = ctx.require_active(conn, run_id)
        generation = int(run["generation"])
        staged = _staged_count(conn, run_id)
        savepoint = conn.begin_nested()
        upsert = _upsert(ctx, run_id, generation, now)
        written, added, touched, confirmed = _write(conn, upsert, run_id, generation, now)
        superseded = 0
        if written != staged and confirmed == written:
            superseded = _superseded_count(conn, run_id, generation)
        if written + superseded == staged and confirmed == written:
            savepoint.commit()
        else:
            savepoint.rollback()
            upsert = _upsert(ctx, run_id, generation, now, confirm=False)
            written, added, touched, _ = _write(conn, upsert, run_id, generation, now)
            confirmed, superseded = 0, 0
        result = FlushResult(
            run_id=run_id,
            generation=generation,
            staged=staged,
            added=added,
            changed=touched - added,
            unchanged=staged - touched,
            superseded=superseded,
        )
        set_run(
            conn, run_id, confirmed_count=confirmed, heartbeat_at=utcnow(), **result.run_counts()
        )
    return result


def _write(
    conn: Connection, upsert, run_id: str, generation: int, now: datetime
) -> tuple[int, int, int, int]:
    """Run ``upsert`` and count what it wrote: (rows written, rows inserted, rows inserted or
    whose content changed, rows that now carry this run's generation and confirmation).

    first_seen_at / changed_at are ``now`` exactly on the rows this upsert inserted / changed,
    and only this run's upsert writes its generation (fencing), so the rows stamped with the
    generation are the rows it wrote. PostgreSQL aggregates the upsert's ``RETURNING`` in the
    server, then reads the confirmations back (a CTE cannot see its own writes); SQLite has no
    DML in a CTE, so it takes the written rows from the statement's row count and the rest from
    one scan of the stamped rows instead of sending every written row back to Python. The
    confirmation is always read back, so a write the database dropped after the statement
    reported it is not counted.
    """
    p = t.projects
    now_lit = sa.literal(now, t.UTCDateTime())
    added = sa.case((p.c.first_seen_at == now_lit, 1), else_=0)
    touched = sa.case((p.c.changed_at == now_lit, 1), else_=0)
    confirmed = sa.func.count().filter(
        p.c.last_confirmed_run_id == run_id, p.c.confirmed_generation == generation
    )
    stamped = sa.select().select_from(p).where(p.c.seen_generation == generation)
    if conn.dialect.name == "postgresql":
        written = upsert.returning(added.label("added"), touched.label("touched")).cte("written")
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(written.c.added), 0),
                sa.func.coalesce(sa.func.sum(written.c.touched), 0),
            ).select_from(written)
        ).one()
        (confirmed_rows,) = conn.execute(stamped.add_columns(confirmed)).one()
        return int(row[0]), int(row[1]), int(row[2]), int(confirmed_rows)
    written_rows = conn.execute(upsert).rowcount
    row = conn.execute(
        stamped.add_columns(
            sa.func.coalesce(sa.func.sum(added), 0),
            sa.func.coalesce(sa.func.sum(touched), 0),
            confirmed,
        )
    ).one()
    return int(written_rows), int(row[0]), int(row[1]), int(row[2])


def _superseded_count(conn: Connection, run_id: str, generation: int) -> int:
    """Staged keys of ``run_id`` that a newer run saw, and it or a newer one confirmed: fenced
    from this run's flush, and rightly so (a run over another scope read the project later, a
    repository transferred between owners, say). Only on the rare path: it joins the staging."""
    p, s = t.projects, t.staged_projects
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(s.join(p, p.c.project_key == s.c.project_key))
            .where(
                s.c.run_id == run_id,
                p.c.seen_generation > generation,
                p.c.confirmed_generation >= generation,
            )
        ).scalar_one()
    )


def _staged_count(conn: Connection, run_id: str) -> int:
    s = t.staged_projects
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.run_id == run_id)
        ).scalar_one()
    )


def _upsert(ctx: StoreContext, run_id: str, generation: int, now: datetime, confirm=True):
    """INSERT … SELECT from staging, ON CONFLICT update unless a newer generation saw the row;
    every row it writes carries this run's stamps and (``confirm``) its confirmation."""
    p, s = t.projects, t.staged_projects
    confirmation = (run_id, generation) if confirm else (None, None)
    select = sa.select(
        *[s.c[c] for c in _DATA_COLS],
        ctx.dialect.digest(s).label("content_hash"),
        sa.literal(run_id).label("run_id"),
        sa.literal(generation).label("seen_generation"),
        sa.literal(confirmation[0], sa.String).label("last_confirmed_run_id"),
        sa.literal(confirmation[1], sa.BigInteger).label("confirmed_generation"),
        sa.literal(now, t.UTCDateTime()).label("first_seen_at"),
        sa.literal(now, t.UTCDateTime()).label("last_seen_at"),
        sa.literal(now, t.UTCDateTime()).label("changed_at"),
        sa.literal(0).label("missed_runs"),
        sa.literal(generation).label("first_seen_generation"),
    ).where(s.c.run_id == run_id)
    insert = ctx.dialect.insert(p).from_select([*_DATA_COLS, "content_hash", *_STAMP_COLS], select)
    excluded = insert.excluded
    changed = p.c.content_hash != excluded.content_hash
    update = {c: excluded[c] for c in t.PROJECT_DATA_COLUMNS}
    if confirm:
        update.update(
            last_confirmed_run_id=excluded.last_confirmed_run_id,
            confirmed_generation=excluded.confirmed_generation,
        )
    update.update(
        run_id=excluded.run_id,
        seen_generation=excluded.seen_generation,
        last_seen_at=excluded.last_seen_at,
        changed_at=sa.case((changed, excluded.changed_at), else_=p.c.changed_at),
        missing_since=None,
        missed_runs=0,
        # seen again: no longer out of coverage, nor orphaned
        out_of_coverage_since=None,
        out_of_coverage_reason=None,
        orphaned_since=None,
        orphan_reason=None,
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
    """Prove the flush: the staging holds every row the run's batches staged (their count is
    committed with each batch), every staged key is in ``projects`` with this run's generation
    and its confirmation, or with a newer run's that saw and confirmed it since (superseded: a
    newer concurrent run over another scope), and no other row carries the generation.

    The content needs no second comparison: only this run's upsert can write its generation
    (fencing), and it writes a row's content, digest and stamps in one row version.

    Only then set ``flush_succeeded`` on the run. Reads ``projects``, never writes it (the
    flush confirmed the rows in the transaction that wrote them). Raises
    ``FlushVerificationError`` otherwise.
    """
    with ctx.engine.begin() as conn:
        run = ctx.require_active(conn, run_id)
        generation = int(run["generation"])
        staged, present, stamped = _verify_counts(conn, run_id, generation)
        superseded = 0 if present == staged else _superseded_count(conn, run_id, generation)
        if run["staged_count"] != staged:
            raise FlushVerificationError(
                f"run {run_id}: its batches staged {run['staged_count']} rows but its staging "
                f"holds {staged}: staged rows went missing before the flush, so this run did "
                "not see what it scanned"
            )
        if staged != present + superseded or stamped != present or run["flushed_count"] != staged:
            raise FlushVerificationError(
                f"run {run_id}: staged {staged}, present with generation {generation}: "
                f"{present}, seen and confirmed by a newer run: {superseded}, rows stamped "
                f"with it: {stamped}, flushed {run['flushed_count']}"
            )
        set_run(conn, run_id, flush_succeeded=True, confirmed_count=present, heartbeat_at=utcnow())
    return VerifyResult(
        run_id, generation, int(staged), int(present), int(present), True, superseded
    )


def _verify_counts(conn: Connection, run_id: str, generation: int) -> tuple[int, int, int]:
    """(staged rows, rows present with this generation and confirmation, rows stamped with the
    generation), in one statement: a count of the staging and one scan of ``projects``.

    No join is needed for "every staged key is present": only this run's upsert writes its
    generation (fenced, from its own staging), so the stamped rows' keys are staged keys, and
    as many of them as were staged means all of them.
    """
    p, s = t.projects, t.staged_projects
    staged = sa.select(sa.func.count()).select_from(s).where(s.c.run_id == run_id).scalar_subquery()
    confirmed = sa.and_(p.c.confirmed_generation == generation, p.c.last_confirmed_run_id == run_id)
    row = conn.execute(
        sa.select(
            staged,
            sa.func.count().filter(confirmed),
            sa.func.count(),
        )
        .select_from(p)
        .where(p.c.seen_generation == generation)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])
