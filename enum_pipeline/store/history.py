"""History and restore: removed projects go to ``removed_projects`` and can come back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext
from enum_pipeline.store.records import RemovedProject, utcnow

REASON_BATCH = 1000


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def history(ctx: StoreContext, run_id: str | None = None) -> list[RemovedProject]:
    """Removed projects (optionally those one cleanup removed), newest first."""
    stmt = sa.select(t.removed_projects).order_by(t.removed_projects.c.id.desc())
    if run_id is not None:
        stmt = stmt.where(t.removed_projects.c.removed_by_run_id == run_id)
    with ctx.engine.connect() as conn:
        return [RemovedProject.from_row(r) for r in conn.execute(stmt).mappings()]


def move_to_history(
    conn: Connection,
    where,
    run_id: str,
    now: datetime,
    reasons: dict[str, str] | None = None,
    *,
    confirmations: dict[str, tuple[str, datetime]] | None = None,
) -> list[str]:
    """Move the rows matching ``where`` to ``removed_projects`` (each row as JSON, with its reason
    from ``reasons``: project key -> why, and ``run_id``: a cleanup's run or a prune's id);
    returns their keys, sorted.

    PostgreSQL: one statement (``DELETE … RETURNING`` feeding the ``INSERT``); SQLite, which
    has no DML in a CTE: ``INSERT … SELECT`` then ``DELETE … RETURNING`` in the same
    transaction, under its single write lock. Nothing passes through Python but the keys.
    """
    p, h = t.projects, t.removed_projects
    now_lit = sa.literal(now, t.UTCDateTime())
    columns = ["project_key", "scope_key", "removed_by_run_id", "removed_at", "row"]
    if conn.dialect.name == "postgresql":
        gone = sa.delete(p).where(where).returning(*p.c).cte("gone")
        rows = sa.select(
            gone.c.project_key,
            gone.c.scope_key,
            sa.literal(run_id),
            now_lit,
            sa.func.to_jsonb(gone.table_valued()),
        ).order_by(gone.c.project_key)
        stmt = sa.insert(h).from_select(columns, rows).returning(h.c.id, h.c.project_key)
        moved = conn.execute(stmt).all()
    else:
        rows = (
            sa.select(
                p.c.project_key, p.c.scope_key, sa.literal(run_id), now_lit, _sqlite_row_json()
            )
            .where(where)
            .order_by(p.c.project_key)
        )
        moved = conn.execute(
            sa.insert(h).from_select(columns, rows).returning(h.c.id, h.c.project_key)
        ).all()
        conn.execute(sa.delete(p).where(where))
    _record_reasons(conn, moved, reasons or {})
    _record_confirmations(conn, moved, confirmations or {})
    return sorted(key for _, key in moved)


def _record_confirmations(
    conn: Connection, moved, confirmations: dict[str, tuple[str, datetime]]
) -> None:
    """Set the witness's evidence and time on each history row just moved (one executemany;
    confirmations are bounded by the cleanup's budget)."""
    h = t.removed_projects
    rows = [
        {"hid": history_id, "evidence": confirmations[key][0], "at": confirmations[key][1]}
        for history_id, key in moved
        if key in confirmations
    ]
    if rows:
        conn.execute(
            sa.update(h)
            .where(h.c.id == sa.bindparam("hid"))
            .values(confirmation=sa.bindparam("evidence"), confirmed_at=sa.bindparam("at")),
            rows,
        )


def _record_reasons(conn: Connection, moved, reasons: dict[str, str]) -> None:
    """Set ``removed_projects.reason`` of the rows just moved, one UPDATE a distinct reason."""
    h = t.removed_projects
    by_reason: dict[str, list[int]] = {}
    for history_id, key in moved:
        if reasons.get(key):
            by_reason.setdefault(reasons[key], []).append(history_id)
    for reason, ids in by_reason.items():
        for start in range(0, len(ids), REASON_BATCH):
            chunk = ids[start : start + REASON_BATCH]
            conn.execute(sa.update(h).where(h.c.id.in_(chunk)).values(reason=reason))


def _sqlite_row_json():
    """SQLite: a ``projects`` row as the JSON object history keeps (timestamps in ISO form)."""
    p = t.projects
    args = []
    for column in p.columns:
        value = column
        if isinstance(column.type, sa.JSON):
            value = sa.func.json(column)
        elif isinstance(column.type, t.UTCDateTime):
            value = sa.func.replace(column, " ", "T").op("||")("+00:00")
        args += [sa.literal(column.name), value]
    return sa.func.json_object(*args)


def restore(ctx: StoreContext, cleanup_run_id: str, restored_by: str = "operator") -> list[str]:
    """Bring back every project the cleanup of ``cleanup_run_id`` removed and that is absent.

    Returns the restored keys. Running it again restores nothing more.

    Set-based, at any size, and nothing but the keys passes through Python: one
    ``INSERT … SELECT`` rebuilds each absent project from its JSON copy (``_restore_rows``; a key
    present is skipped, a key removed twice by the same cleanup comes back as first removed),
    then one ``UPDATE … WHERE removed_by_run_id = :run`` marks the history rows restored.
    """
    h, p = t.removed_projects, t.projects
    pending = sa.and_(h.c.removed_by_run_id == cleanup_run_id, h.c.restored_at.is_(None))
    absent = ~sa.exists().where(p.c.project_key == h.c.project_key)
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)
        rows = _restore_rows(conn).where(pending, absent).order_by(h.c.id)
        stmt = (
            ctx.dialect.insert(p)
            .from_select([c.name for c in p.columns], rows)
            .on_conflict_do_nothing(index_elements=[p.c.project_key])
            .returning(p.c.project_key)
        )
        restored = list(conn.execute(stmt).scalars())
        conn.execute(
            sa.update(h).where(pending).values(restored_at=utcnow(), restored_by=restored_by)
        )
    return restored


def _restore_rows(conn: Connection) -> sa.Select:
    """SELECT over ``removed_projects``: the ``projects`` row each saved JSON copy holds, no
    longer missing. A column the copy lacks (added since the removal) is NULL.

    PostgreSQL: ``jsonb_populate_record`` with the table's row type. SQLite: each column from
    ``json_extract``; a JSON column keeps its JSON text, a timestamp goes back to the form the
    columns hold (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC).
    """
    h, p = t.removed_projects, t.projects
    if conn.dialect.name == "postgresql":
        row_type = sa.literal_column(f"NULL::{conn.dialect.identifier_preparer.format_table(p)}")
        saved = (
            sa.func.jsonb_populate_record(row_type, h.c.row)
            .table_valued(*[c.name for c in p.columns])
            .alias("saved")
        )
        source = h.join(saved, sa.true())
        value = {c.name: saved.c[c.name] for c in p.columns}
    else:
        source = h
        value = {c.name: _sqlite_saved(h.c.row, c) for c in p.columns}
    value.update(missing_since=sa.null(), missed_runs=sa.literal(0))
    return sa.select(*value.values()).select_from(source)


def _sqlite_saved(row, column: sa.Column):
    """SQLite: the value of ``column`` in the JSON copy ``row``, as the column holds it."""
    path = f'$."{column.name}"'
    if isinstance(column.type, t.UTCDateTime):
        text = sa.func.json_extract(row, path)
        fraction = sa.case(
            (sa.func.substr(text, 20, 1) == ".", sa.func.substr(text, 20, 7)), else_=".000000"
        )
        return sa.func.replace(sa.func.substr(text, 1, 19), "T", " ").op("||")(fraction)
    if isinstance(column.type, sa.JSON):
        # JSON text, not the SQL value json_extract gives (a string unquoted, true as 1)
        null = sa.null() if column.type.none_as_null else sa.literal("null")
        return sa.case(
            (sa.func.json_type(row, path) == "null", null),
            (sa.func.json_type(row, path).in_(["true", "false"]), sa.func.json_type(row, path)),
            (
                sa.func.json_type(row, path) == "text",
                sa.func.json_quote(sa.func.json_extract(row, path)),
            ),
            else_=sa.func.json_extract(row, path),
        )
    return sa.func.json_extract(row, path)
