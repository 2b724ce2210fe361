"""Staging: what a run saw, written as it scans (stage, end_scope), read back, and pruned after.

A record becomes one tuple in ``staged_projects``' column order (derived from the schema, so new
columns flow through): its fields as they are, its JSON columns as text encoded once
(``row_of``). No digest is computed here: the flush derives ``content_hash`` in SQL from the
staged columns (``dialect.digest``), where it costs the database a fraction of what hashing
costs Python.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.dialect import STAGE_COLUMNS, RetryBatch
from enum_pipeline.store.errors import StoreError
from enum_pipeline.store.records import RunStatus, utcnow
from enum_pipeline.store.runs import heartbeat

# A batch is tried again, whole, only when the dialect's fast path turned it back (a key the
# run had staged already, a partition that went away), each time on a way that cannot do so
# for the same reason.
_STAGE_ATTEMPTS = 3

#: Staging of at least this many newest completed runs is always kept (run deltas read the two
#: newest; CONTRACTS.md 5).
KEEP_COMPLETED = 2

# The JSON encoding of the JSON columns: keys sorted (equal values stage equal text), non-ASCII
# as is, anything else JSON cannot say as its str(). One C encoder made once (JSONEncoder.encode
# makes a new one every call).
_json_text = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode
if c_make_encoder is not None:
    _chunks = c_make_encoder(None, str, encode_basestring, None, ": ", ", ", True, False, True)

    def _encode(value: Any) -> str:
        return "".join(_chunks(value, 0))
else:  # pragma: no cover - an interpreter without the C accelerator
    _encode = _json_text

_FIELDS = {f.name for f in fields(ProjectRecord)}
_TIMES = {c.name for c in t.staged_projects.columns if isinstance(c.type, t.UTCDateTime)}
# Each JSON column, and what it holds for a None field: markers and attributes always hold a
# value; the others (topics, remotes) stay NULL, "not known", never an invented empty list.
_JSON = {
    c.name: {"attributes": "{}", "markers": "[]"}.get(c.name)
    for c in t.staged_projects.columns
    if isinstance(c.type, sa.JSON)
}

# The text of a markers tuple, sorted: scans repeat a few marker sets, so each set is encoded
# once (bounded, in case a source invents many).
_MARKER_TEXT: dict[tuple[str, ...], str] = {}
_MARKER_CACHE_SIZE = 4096


def _marker_text(markers) -> str:
    if type(markers) is not tuple:  # a list or set a caller passed: not hashable, not cached
        return _encode(sorted(markers))
    text = _MARKER_TEXT.get(markers)
    if text is None:
        text = _encode(sorted(markers))
        if len(_MARKER_TEXT) < _MARKER_CACHE_SIZE:
            _MARKER_TEXT[markers] = text
    return text


def _column_expression(column: str) -> str:
    """The Python expression that gives ``column``'s staged value from record ``r``."""
    if column == "run_id":
        return "run_id"
    if column not in _FIELDS:  # a column added before its field
        return "None"
    if column == "markers":
        return "_marker_text(r.markers)"
    if column in _JSON:
        return f"{_JSON[column]!r} if r.{column} is None else _encode(r.{column})"
    if column in _TIMES:
        return f"None if r.{column} is None else convert(r.{column})"
    return f"r.{column}"


def _row_builder(stage_time) -> Any:
    """A function ``(run_id, record) -> row`` for one timestamp form, generated from
    ``STAGE_COLUMNS`` (as ``dataclasses`` generates ``__init__``): one tuple display, one
    attribute read a column, no per-row dict or loop — half the cost of building the row
    field by field, on the path every staged record takes."""
    body = ", ".join(_column_expression(c) for c in STAGE_COLUMNS)
    namespace = {
        "_marker_text": _marker_text,
        "_encode": _encode,
        "convert": stage_time or _aware_utc,
    }
    exec(f"def row(run_id, r):\n    return ({body},)\n", namespace)  # noqa: S102 - our own text
    return namespace["row"]


def _aware_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@functools.cache
def row_builder(stage_time=None):
    """The row function for ``stage_time`` (the dialect's timestamp form; None: aware UTC
    datetimes), built once."""
    return _row_builder(stage_time)


def row_of(run_id: str, record: ProjectRecord, stage_time=None) -> tuple:
    """``record`` as one ``staged_projects`` row (a tuple in ``STAGE_COLUMNS`` order): its
    fields as they are, markers sorted, JSON columns as text encoded once, timestamps through
    ``stage_time`` (the dialect's form; default: aware UTC datetimes). The digest is not built
    here: the flush computes it in SQL (``dialect.digest``)."""
    return row_builder(stage_time)(run_id, record)


def stage(ctx: StoreContext, run_id: str, records: Iterable[ProjectRecord]) -> int:
    """Durably stage a batch of records for ``run_id``; returns how many were new.

    A key seen twice in one run (overlapping roots) is kept once, first sighting wins.
    """
    row = row_builder(ctx.dialect.stage_time)
    rows = [row(run_id, r) for r in records]
    if not rows:
        heartbeat(ctx, run_id)
        return 0
    for _ in range(_STAGE_ATTEMPTS):
        try:
            with ctx.engine.begin() as conn:
                # Counted as if every row were new, which the fast path proves by succeeding;
                # a batch that met keys the run had already staged is corrected below.
                ctx.count_batch(conn, run_id, scanned=len(rows), staged=len(rows))
                inserted = ctx.dialect.stage_rows(conn, run_id, rows)
                if inserted != len(rows):
                    known = len(rows) - inserted
                    set_run(conn, run_id, staged_count=t.run_state.c.staged_count - known)
            return inserted
        except RetryBatch:
            continue  # rolled back whole; the dialect now knows the way that will take it
    raise StoreError(f"run {run_id}: a batch could not be staged in {_STAGE_ATTEMPTS} attempts")


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
            "identity": verdict.identity or {},
            "coverage": verdict.coverage or {},
            "protected_reasons": verdict.protected_reasons or {},
            "ended_at": utcnow(),
        }
        stmt = (
            ctx.dialect.insert(t.run_scopes)
            .values(run_id=run_id, scope_key=verdict.scope_key, **values)
            .on_conflict_do_update(index_elements=["run_id", "scope_key"], set_=values)
        )
        conn.execute(stmt)


def staged_rows(ctx: StoreContext, run_id: str, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """The rows ``run_id`` staged, in key order, streamed (empty once its staging is pruned)."""
    s = t.staged_projects
    stmt = sa.select(s).where(s.c.run_id == run_id).order_by(s.c.project_key)
    with ctx.engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(stmt).mappings()
        for row in result:
            yield dict(row)


def prune_staging(ctx: StoreContext, keep_runs: int = 3) -> int:
    """Drop the staging of finished runs, keeping the newest ``keep_runs`` runs and the newest
    ``KEEP_COMPLETED`` completed ones; returns the rows dropped.

    PostgreSQL drops each pruned run's partition whole; SQLite deletes its rows.
    """
    rs = t.run_state
    with ctx.engine.begin() as conn:
        ctx.lock_inventory(conn)  # DDL on PostgreSQL: never beside a cleanup or a begin
        newest = sa.select(rs.c.run_id).order_by(rs.c.generation.desc())
        keep = set(conn.execute(newest.limit(keep_runs)).scalars())
        completed = newest.where(rs.c.status == RunStatus.COMPLETED).limit(KEEP_COMPLETED)
        keep |= set(conn.execute(completed).scalars())
        keep |= set(
            conn.execute(sa.select(rs.c.run_id).where(rs.c.status == RunStatus.ACTIVE)).scalars()
        )
        return ctx.dialect.drop_staging_except(conn, keep)
