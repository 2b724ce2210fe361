"""Read-only queries: runs, scopes, projects, counts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext
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


def active_run(ctx: StoreContext) -> RunInfo | None:
    """The active run, if any."""
    with ctx.engine.connect() as conn:
        rid = conn.execute(
            sa.select(t.run_state.c.run_id).where(t.run_state.c.status == RunStatus.ACTIVE)
        ).scalar()
    return get_run(ctx, rid) if rid else None


def scopes(ctx: StoreContext, run_id: str) -> list[ScopeReading]:
    """The scope verdicts a run recorded."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.run_scopes)
            .where(t.run_scopes.c.run_id == run_id)
            .order_by(t.run_scopes.c.scope_key)
        ).mappings()
        return [ScopeReading.from_row(r) for r in rows]


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
