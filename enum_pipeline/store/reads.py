"""Read-only queries: runs, scopes, projects, counts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext
from enum_pipeline.store.errors import AmbiguousRunError, UnknownRunError
from enum_pipeline.store.records import RunInfo, RunStatus, ScopeReading


def get_run(ctx: StoreContext, run_id: str) -> RunInfo:
    """The ``run_state`` row of ``run_id``."""
    with ctx.engine.connect() as conn:
        row = ctx.run_row(conn, run_id)
    return RunInfo.from_row(row)


def runs(ctx: StoreContext, limit: int = 50) -> list[RunInfo]:
    """The newest runs first."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.run_state).order_by(t.run_state.c.generation.desc()).limit(limit)
        ).mappings()
        return [RunInfo.from_row(r) for r in rows]


def active_runs(ctx: StoreContext) -> list[RunInfo]:
    """The active runs (several when their scope sets are disjoint), oldest first."""
    rs = t.run_state
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(rs).where(rs.c.status == RunStatus.ACTIVE).order_by(rs.c.generation)
        ).mappings()
        return [RunInfo.from_row(r) for r in rows]


def active_run(ctx: StoreContext) -> RunInfo | None:
    """The oldest active run, if any."""
    active = active_runs(ctx)
    return active[0] if active else None


def scopes(ctx: StoreContext, run_id: str) -> list[ScopeReading]:
    """The scope verdicts a run recorded."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.run_scopes)
            .where(t.run_scopes.c.run_id == run_id)
            .order_by(t.run_scopes.c.scope_key)
        ).mappings()
        return [ScopeReading.from_row(r) for r in rows]


def scope_readings(ctx: StoreContext, scope_key: str, limit: int) -> list[ScopeReading]:
    """The newest ``limit`` readings of ``scope_key`` by completed runs, newest first."""
    s, rs = t.run_scopes, t.run_state
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(s)
            .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
            .where(s.c.scope_key == scope_key, rs.c.status == "completed")
            .order_by(rs.c.generation.desc())
            .limit(limit)
        ).mappings()
        return [ScopeReading.from_row(r) for r in rows]


def latest_scope_readings(ctx: StoreContext) -> dict[str, ScopeReading]:
    """Every scope's newest reading by a completed run, by scope key (one statement)."""
    s, rs = t.run_scopes, t.run_state
    newest = (
        sa.select(
            s,
            sa.func.row_number()
            .over(partition_by=s.c.scope_key, order_by=rs.c.generation.desc())
            .label("newest"),
        )
        .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
        .where(rs.c.status == "completed")
        .subquery()
    )
    columns = [newest.c[c.name] for c in s.columns]
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(*columns).where(newest.c.newest == 1)).mappings()
        return {r["scope_key"]: ScopeReading.from_row(r) for r in rows}


def project_keys(ctx: StoreContext, scope_key: str | None = None) -> set[str]:
    """Keys of the projects in the inventory (optionally of one scope)."""
    stmt = sa.select(t.projects.c.project_key)
    if scope_key is not None:
        stmt = stmt.where(t.projects.c.scope_key == scope_key)
    with ctx.engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


def projects(ctx: StoreContext, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``projects``, ordered by key."""
    stmt = sa.select(t.projects).order_by(t.projects.c.project_key)
    if limit is not None:
        stmt = stmt.limit(limit)
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def count_projects(ctx: StoreContext) -> int:
    """How many projects the inventory holds."""
    with ctx.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t.projects)).scalar_one()


MIN_PREFIX = 4  # the shortest run id prefix accepted (the Dagster UI shows 8 characters)
NAMED = 5  # ids named in an ambiguous or unknown run id's sentence


def resolve_run_id(ctx: StoreContext, given: str, *, removals: bool = False) -> str:
    """The run id ``given`` stands for: itself when a run (or, with ``removals``, a cleanup or
    prune that removed projects) has exactly that id, else the one id that begins with it (at
    least ``MIN_PREFIX`` characters). ``AmbiguousRunError`` names the ids a prefix matches;
    ``UnknownRunError`` names the newest runs."""
    rs, h = t.run_state, t.removed_projects
    columns = [rs.c.run_id] + ([h.c.removed_by_run_id] if removals else [])
    with ctx.engine.connect() as conn:
        for col in columns:
            if conn.execute(sa.select(col).where(col == given).limit(1)).first():
                return given
        matches: set[str] = set()
        if len(given) >= MIN_PREFIX:
            for col in columns:
                # LIKE finds the candidates (escaped: ``_`` and ``%`` are literal), substr keeps
                # the case-sensitive ones (SQLite's LIKE ignores ASCII case).
                stmt = (
                    sa.select(col)
                    .where(
                        col.startswith(given, autoescape=True),
                        sa.func.substr(col, 1, len(given)) == given,
                    )
                    .distinct()
                    .limit(NAMED + 1)
                )
                matches.update(conn.execute(stmt).scalars())
    if len(matches) == 1:
        return matches.pop()
    if matches:
        named = sorted(matches)[:NAMED]
        more = ", …" if len(matches) > NAMED else ""
        raise AmbiguousRunError(
            f"run id prefix {given!r} is ambiguous: {', '.join(named)}{more} all begin with it; "
            "give more characters"
        )
    newest = ", ".join(f"{r.run_id} ({r.status})" for r in runs(ctx, NAMED))
    short = f" (a prefix needs {MIN_PREFIX} characters or more)" if len(given) < MIN_PREFIX else ""
    raise UnknownRunError(
        f"no run {given!r} in the inventory{short}; "
        + (f"newest runs: {newest}" if newest else "the inventory has no runs yet")
    )
