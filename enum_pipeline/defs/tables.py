"""Dagster table metadata that names projects: run deltas, cleanup plans, restores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dagster import (
    AssetKey,
    AssetMaterialization,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from enum_pipeline.store import projects_table

LISTED = 50  # rows shown in one table; the rest are counted with the command that lists all


def _schema(*columns: str | tuple[str, str] | tuple[str, str, str]) -> TableSchema:
    """A table schema; each column is a name (a string column) or (name, type[, description])."""

    def column(c) -> TableColumn:
        name, kind, *about = (c, "string") if isinstance(c, str) else c
        return TableColumn(name, kind, description=about[0] if about else None)

    return TableSchema(columns=[column(c) for c in columns])


CHANGE_SCHEMA = _schema(
    ("change", "string", "added, changed or removed"),
    "name",
    ("fields", "string", "the columns that changed"),
    "location",
    "scope",
)
CLEANUP_SCHEMA = _schema(
    ("action", "string", "remove, mark_missing or keep"),
    "name",
    "reason",
    ("witness", "string", "what a direct look found: absence confirmed, or why it is kept"),
    "location",
    "scope",
)
RESTORE_SCHEMA = _schema("name", "location", "scope", "project_key")
RESTORABLE_SCHEMA = _schema(
    ("cleanup_of_run", "string", "id to pass to restore_projects"),
    ("removed", "int"),
    ("removed_at", "string"),
    ("names", "string", "the first projects it removed"),
)
SCOPE_SCHEMA = _schema(
    "scope",
    ("total", "int"),
    ("missing", "int", "not seen by the newest runs, kept"),
    ("out_of_coverage", "int"),
    ("incomplete", "bool", "the newest read of the scope failed"),
)

BUDGET_SCHEMA = _schema(
    "scope",
    ("requests", "int"),
    ("pages", "int"),
    ("retries", "int"),
    ("conditional_hits", "int", "304 answers"),
    ("limit_wait_seconds", "float", "waited for a rate limit to reset"),
    ("backoff_seconds", "float", "waited before retrying a failure"),
    ("quota_remaining", "int", "the token's rate limit left at the end"),
    ("quota_limit", "int"),
)


def budget_metadata(scopes: Sequence[dict]) -> dict[str, MetadataValue | int | float]:
    """What the run's reads cost the code hosts: a table by scope, and the totals Dagster
    plots over time (``requests``, ``rate_limit_wait_seconds``, ``quota_remaining_min``)."""
    rows = [
        {
            "scope": s["scope_key"],
            **{c.name: s["budget"].get(c.name) for c in BUDGET_SCHEMA.columns[1:]},
        }
        for s in scopes
        if s.get("budget")
    ]
    if not rows:
        return {}
    left = [r["quota_remaining"] for r in rows if r["quota_remaining"] is not None]
    totals: dict[str, MetadataValue | int | float] = {
        "requests": sum(r["requests"] or 0 for r in rows),
        "rate_limit_wait_seconds": round(sum(r["limit_wait_seconds"] or 0 for r in rows), 3),
    }
    if left:
        totals["quota_remaining_min"] = min(left)
    return {"request_budget": capped(rows, BUDGET_SCHEMA, "the run's log")["table"], **totals}


_SQL_TYPES = {"TEXT": "string", "VARCHAR": "string", "BIGINT": "int", "INTEGER": "int"}


def capped(
    rows: Sequence[dict], schema: TableSchema, more_hint: str, limit: int = LISTED
) -> dict[str, MetadataValue]:
    """``{"<name>": table, "<name>_more": "N more: <hint>"}`` parts for a list of rows."""
    shown = [TableRecord({k: ("" if v is None else v) for k, v in r.items()}) for r in rows[:limit]]
    out: dict[str, MetadataValue] = {"table": MetadataValue.table(shown, schema=schema)}
    if len(rows) > limit:
        out["more"] = MetadataValue.text(f"{len(rows) - limit} more: {more_hint}")
    return out


def table_metadata(
    name: str, rows: Sequence[dict], schema: TableSchema, more_hint: str
) -> dict[str, MetadataValue]:
    """Metadata entries ``name`` (the table) and ``name_more`` (when capped)."""
    parts = capped(rows, schema, more_hint)
    return {name if k == "table" else f"{name}_more": v for k, v in parts.items()}


def change_rows(changes: Iterable) -> list[dict]:
    """Rows of ``CHANGE_SCHEMA`` from ``ProjectChange``s."""
    return [
        {
            "change": c.change,
            "name": c.name,
            "scope": c.scope_key,
            "location": c.location,
            "fields": ", ".join(c.fields),
        }
        for c in changes
    ]


def entry_rows(entries: Iterable) -> list[dict]:
    """Rows of ``CLEANUP_SCHEMA`` from cleanup entries (objects or dicts)."""
    rows = []
    for e in entries:
        get = e.get if isinstance(e, dict) else lambda k, e=e: getattr(e, k)
        rows.append(
            {
                "action": get("action"),
                "name": get("name"),
                "scope": get("scope_key"),
                "location": get("location"),
                "reason": get("reason") or "",
                "witness": get("confirmation") or "",
            }
        )
    return rows


def projects_column_schema() -> TableSchema:
    """The shape of the ``projects`` table, for ``dagster/column_schema``."""
    columns = []
    for c in projects_table.columns:
        kind = type(c.type).__name__.upper()
        columns.append(
            TableColumn(
                c.name,
                _SQL_TYPES.get(kind, kind.lower()),
                description="primary key" if c.primary_key else None,
            )
        )
    return TableSchema(columns=columns)


def projects_row_count_event(store, description: str, **metadata) -> AssetMaterialization:
    """A materialization of ``projects`` recording its current row count (after a cleanup or a
    restore changed it outside the enumeration)."""
    return AssetMaterialization(
        asset_key=AssetKey("projects"),
        description=description,
        metadata={
            "dagster/row_count": store.count_projects(),
            "dagster/table_name": "projects",
            **metadata,
        },
    )


def restorable_table(store):
    """The cleanups that can be restored, with what each removed, as table metadata."""
    rows = [
        {
            "cleanup_of_run": r.run_id,
            "removed": r.count,
            "removed_at": f"{r.removed_at:%Y-%m-%d %H:%M:%S}",
            "names": ", ".join(r.names) + (", …" if r.count > len(r.names) else ""),
        }
        for r in store.restorable_cleanups()
    ]
    return capped(rows, RESTORABLE_SCHEMA, "enum-pipeline history")["table"]
