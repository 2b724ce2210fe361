"""The persisted cleanup plan: every project a cleanup (or an orphan prune) names, with its
action, reason and witness, and which removals an operator approved."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.batch import CHUNK
from enum_pipeline.store.records import CleanupEntry


def save_entries(
    conn: Connection, run_id: str, entries: list[CleanupEntry], approved: set[str]
) -> None:
    """Persist the plan's entries for ``run_id`` (replacing an earlier plan of it)."""
    ce = t.cleanup_entries
    conn.execute(sa.delete(ce).where(ce.c.run_id == run_id))
    rows = [
        {
            "run_id": run_id,
            "project_key": e.project_key,
            "scope_key": e.scope_key,
            "name": e.name,
            "location": e.location,
            "action": e.action,
            "reason": e.reason,
            "approved": e.project_key in approved and e.action == "remove",
            "confirmation": e.confirmation,
        }
        for e in entries
    ]
    for start in range(0, len(rows), CHUNK):
        conn.execute(sa.insert(ce), rows[start : start + CHUNK])


def approved_keys(conn: Connection, run_id: str) -> set[str]:
    """Keys of the removals an operator approved for ``run_id``."""
    ce = t.cleanup_entries
    return set(
        conn.execute(
            sa.select(ce.c.project_key).where(ce.c.run_id == run_id, ce.c.approved.is_(True))
        ).scalars()
    )


def load_entries(conn: Connection, run_id: str) -> list[CleanupEntry]:
    """The persisted plan of ``run_id``, by action then key."""
    ce = t.cleanup_entries
    order = sa.case({"remove": 0, "mark_missing": 1}, value=ce.c.action, else_=2)
    rows = conn.execute(
        sa.select(ce).where(ce.c.run_id == run_id).order_by(order, ce.c.project_key)
    ).mappings()
    return [
        CleanupEntry(
            r["project_key"],
            r["name"],
            r["scope_key"],
            r["location"],
            r["action"],
            r["reason"],
            r["confirmation"],
        )
        for r in rows
    ]
