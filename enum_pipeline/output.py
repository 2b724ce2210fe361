"""What operators read, above the store: CSV and JSON cells, the CLI's table columns, and the
sentences that say why a restore or approval target is wrong.

The store answers with rows and records (``enum_pipeline.store``: ``select_projects``,
``output_row``, ``OUTPUT_COLUMNS``, ``restorable_cleanups``, ``blocked_cleanups``); this module
only turns them into text. It imports nothing of the package, so anything may use it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import IO, Any

#: The columns of the ``table`` output.
TABLE_COLUMNS: tuple[str, ...] = (
    "name",
    "source_kind",
    "location",
    "visibility",
    "archived",
    "language",
    "last_activity_at",
    "status",
)


def cell(value: Any) -> str:
    """A value as one CSV cell: empty for unknown, ``true``/``false``, ISO times, JSON lists."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def json_default(value: Any) -> Any:
    """``json.dumps`` hook: datetimes as ISO strings, tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def write_csv(rows: Iterable[Mapping[str, Any]], out: IO[str], columns: Sequence[str]) -> int:
    """Write ``rows`` (already in output shape) as CSV with a header; returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
        n += 1
    return n


def wrong_target(store: Any, action: str, given: str) -> str:
    """The one sentence an operator gets when ``given`` is no target for ``action``:
    ``restore`` (nothing to restore: the cleanups that can be restored, when and what they
    removed) or ``approve`` (its cleanup is not blocked: the cleanups that are).

    ``store`` is an ``InventoryStore`` (duck-typed: this module imports nothing of the store)."""
    if action == "approve":
        record = store.cleanup_record(given)
        state = record.status if record else "not run yet"
        blocked = store.blocked_cleanups()
        listed = "blocked cleanups: " + ", ".join(blocked) if blocked else "no cleanup is blocked"
        return f"the cleanup of run {given} is {state}, not blocked; {listed}"
    items = store.restorable_cleanups()
    if not items:
        return f"nothing to restore for {given!r}: no cleanup has removed projects not restored"
    listed = ", ".join(
        f"{r.run_id} ({r.count} removed {r.removed_at:%Y-%m-%d %H:%M}: {', '.join(r.names)}"
        + (", …" if r.count > len(r.names) else "")
        + ")"
        for r in items[:5]
    )
    return f"nothing to restore for {given!r}; restorable cleanups: {listed}"
