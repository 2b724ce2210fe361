"""History and restore: removed projects go to ``removed_projects`` and can come back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext
from enum_pipeline.store.records import utcnow

HISTORY_BATCH = 2000
# every timestamp column of projects (kept as ISO text in the history's JSON)
_DATETIME_COLUMNS = tuple(c.name for c in t.projects.columns if isinstance(c.type, t.UTCDateTime))


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def history(ctx: StoreContext, run_id: str | None = None) -> list[dict[str, Any]]:
    """Removed projects (optionally those one cleanup removed), newest first."""
    stmt = sa.select(t.removed_projects).order_by(t.removed_projects.c.id.desc())
    if run_id is not None:
        stmt = stmt.where(t.removed_projects.c.removed_by_run_id == run_id)
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def move_to_history(conn: Connection, where, run_id: str, now: datetime) -> list[str]:
    """Move the rows matching ``where`` to ``removed_projects``, in key order.

    Streams: only the keys are read at once; full rows are read, recorded and deleted
    ``HISTORY_BATCH`` at a time, so memory stays flat however many rows go.
    """
    p = t.projects
    keys: list[str] = []
    all_keys = list(
        conn.execute(sa.select(p.c.project_key).where(where).order_by(p.c.project_key)).scalars()
    )
    for start in range(0, len(all_keys), HISTORY_BATCH):
        chunk = all_keys[start : start + HISTORY_BATCH]
        keys.extend(_move_batch(conn, chunk, where, run_id, now))
    return keys


def _move_batch(conn: Connection, chunk: list[str], where, run_id: str, now) -> list[str]:
    p = t.projects
    batch = (
        conn.execute(
            sa.select(p).where(p.c.project_key.in_(chunk), where).order_by(p.c.project_key)
        )
        .mappings()
        .all()
    )
    if not batch:
        return []
    conn.execute(
        sa.insert(t.removed_projects),
        [
            {
                "project_key": r["project_key"],
                "scope_key": r["scope_key"],
                "removed_by_run_id": run_id,
                "removed_at": now,
                "row": {k: _json_safe(v) for k, v in r.items()},
            }
            for r in batch
        ],
    )
    batch_keys = [r["project_key"] for r in batch]
    conn.execute(sa.delete(p).where(p.c.project_key.in_(batch_keys), where))
    return batch_keys


def restore(ctx: StoreContext, cleanup_run_id: str, restored_by: str = "operator") -> list[str]:
    """Bring back every project the cleanup of ``cleanup_run_id`` removed and that is absent.

    Returns the restored keys. Running it again restores nothing more.
    """
    h, p = t.removed_projects, t.projects
    now = utcnow()
    restored: list[str] = []
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        rows = (
            conn.execute(
                sa.select(h)
                .where(h.c.removed_by_run_id == cleanup_run_id, h.c.restored_at.is_(None))
                .order_by(h.c.id)
            )
            .mappings()
            .all()
        )
        present = set(
            conn.execute(
                sa.select(p.c.project_key).where(
                    p.c.project_key.in_([r["project_key"] for r in rows])
                )
            ).scalars()
        )
        for row in rows:
            if row["project_key"] not in present:
                conn.execute(sa.insert(p).values(**_project_row(row["row"])))
                restored.append(row["project_key"])
        if rows:
            conn.execute(
                sa.update(h)
                .where(h.c.id.in_([r["id"] for r in rows]))
                .values(restored_at=now, restored_by=restored_by)
            )
    return restored


def _project_row(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``projects`` row from its JSON copy in history, no longer missing."""
    columns = {c.name for c in t.projects.columns}
    data = {k: v for k, v in saved.items() if k in columns}
    for name in _DATETIME_COLUMNS:
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    data.update(missing_since=None, missed_runs=0)
    return data
