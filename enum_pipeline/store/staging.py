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
from dataclasses import fields, replace
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.sanitize import safe_text
from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.dialect import STAGE_COLUMNS, RetryBatch
from enum_pipeline.store.errors import StoreError
from enum_pipeline.store.records import QuarantinedRecord, RunStatus, utcnow
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

    A key seen twice in one run (overlapping roots) is kept once, first sighting wins. A record
    the database turns back (a value ``sources.sanitize.screen`` did not foresee) is
    quarantined with the database's reason and the rest of the batch staged (``_bisect``); a
    good batch takes the fast path alone.
    """
    row = row_builder(ctx.dialect.stage_time)
    if not isinstance(records, list | tuple):
        records = list(records)
    try:
        rows = [row(run_id, r) for r in records]
        refused: list[tuple[tuple, str]] = []
    except Exception:  # noqa: BLE001 - one record's value the row cannot hold; find which
        rows, refused = _rows_one_by_one(row, run_id, records)
    if not rows:
        if refused:
            quarantine(ctx, run_id, [_entry(r, why) for r, why in refused])
        heartbeat(ctx, run_id)
        return 0
    try:
        inserted = _stage_rows(ctx, run_id, rows)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        inserted = _bisect(ctx, run_id, rows, refused)
    if refused:
        quarantine(ctx, run_id, [_entry(r, why) for r, why in refused])
    return inserted


def _stage_rows(ctx: StoreContext, run_id: str, rows: list[tuple]) -> int:
    """One batch in one transaction, counts included: the fast path, and its retries."""
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


def _bisect(ctx: StoreContext, run_id: str, rows: list[tuple], refused: list) -> int:
    """Stage ``rows``, which the database turned back, half by half: a single row it still
    turns back joins ``refused`` with the database's reason; returns how many were new."""
    if len(rows) == 1:
        try:
            return _stage_rows(ctx, run_id, rows)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            refused.append((rows[0], f"the database refused it: {_error_text(exc)}"))
            return 0
    half = len(rows) // 2
    inserted = 0
    for part in (rows[:half], rows[half:]):
        try:
            inserted += _stage_rows(ctx, run_id, part)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            inserted += _bisect(ctx, run_id, part, refused)
    return inserted


def _rows_one_by_one(row, run_id: str, records: Iterable[ProjectRecord]):
    """The rows of the records that make one, and the others with why they do not."""
    rows, refused = [], []
    for r in records:
        try:
            rows.append(row(run_id, r))
        except Exception as exc:  # noqa: BLE001 - a value the staged row cannot hold
            keyed = (r.scope_key, r.project_key, r.source_kind)
            refused.append((keyed, f"its row cannot be built: {type(exc).__name__}: {exc}"))
    return rows, refused


_SCOPE, _SOURCE = STAGE_COLUMNS.index("scope_key"), STAGE_COLUMNS.index("source_kind")
_PROJECT = STAGE_COLUMNS.index("project_key")


def _entry(row: tuple, reason: str) -> tuple[str, str, str, str]:
    """(scope_key, project_key, source_kind, reason) of a staged row or a ``_rows_one_by_one``
    triple."""
    if len(row) == 3:
        return (*row, reason)
    return row[_SCOPE], row[_PROJECT], row[_SOURCE], reason


# SQLSTATE of errors a row's own values cause: data exceptions (22: a NUL, a number out of
# range, invalid JSON, a string too long), program limits (54: an index row over btree's limit)
# and NOT NULL / CHECK violations.
_DATA_SQLSTATES = ("22", "54", "23502", "23514")


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised while staging, was caused by a row's values (so splitting the
    batch can isolate the row), not by the database or the connection."""
    if isinstance(exc, sa.exc.DBAPIError):
        exc = exc.orig
    elif isinstance(exc, sa.exc.StatementError):
        return True  # a value its column type could not bind
    if isinstance(exc, UnicodeError | OverflowError):
        return True  # a lone surrogate no driver encodes; an int SQLite cannot hold
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_DATA_SQLSTATES)
    name = type(exc).__name__
    if name == "DataError":  # psycopg's own (a NUL in text), sqlite3's
        return True
    message = str(exc)
    return (name == "IntegrityError" and "NOT NULL" in message) or (
        name == "ProgrammingError" and "binding parameter" in message
    )


def _error_text(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}"


def quarantine(ctx: StoreContext, run_id: str, entries: Iterable[tuple[str, str, str, str]]) -> int:
    """Record records of ``run_id`` the database cannot take: ``(scope_key, project_key,
    source_kind, reason)`` each, keys and reason stored escaped and cut (``safe_text``). They
    count as scanned, never as staged; a scope the run ended already is made incomplete (a
    scope ended later is, by ``end_scope``). Returns how many were recorded."""
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "scope_key": safe_text(scope_key),
            "project_key": safe_text(project_key),
            "source_kind": safe_text(source_kind, 32),
            "reason": safe_text(reason, 1000),
            "quarantined_at": now,
        }
        for scope_key, project_key, source_kind, reason in entries
    ]
    if not rows:
        return 0
    with ctx.engine.begin() as conn:
        ctx.require_active(conn, run_id)
        conn.execute(sa.insert(t.quarantined_records), rows)
        rs = t.run_state
        set_run(conn, run_id, scanned_count=rs.c.scanned_count + len(rows))
        for scope_key in {r["scope_key"] for r in rows}:
            reason = _quarantine_reason(conn, run_id, scope_key)
            sc = t.run_scopes
            conn.execute(
                sa.update(sc)
                .where(sc.c.run_id == run_id, sc.c.scope_key == scope_key, sc.c.complete)
                .values(complete=False, reason=sa.func.coalesce(sc.c.reason + "; ", "") + reason)
            )
    return len(rows)


#: How many quarantined keys a scope's reason names.
REASON_KEYS = 3


def _quarantine_reason(conn, run_id: str, scope_key: str) -> str | None:
    """The scope's incompleteness reason its quarantined records give, or None (there are none)."""
    q = t.quarantined_records
    where = (q.c.run_id == run_id) & (q.c.scope_key == scope_key)
    count = conn.execute(sa.select(sa.func.count()).select_from(q).where(where)).scalar_one()
    if not count:
        return None
    keys = conn.execute(
        sa.select(q.c.project_key).where(where).order_by(q.c.id).limit(REASON_KEYS)
    ).scalars()
    named = ", ".join(safe_text(k, 80) for k in keys)
    more = f" and {count - REASON_KEYS} more" if count > REASON_KEYS else ""
    return (
        f"{count} record(s) quarantined (the database cannot take them): {named}{more}; "
        "nothing under this scope is removed"
    )


def quarantined(ctx: StoreContext, run_id: str) -> list[QuarantinedRecord]:
    """The records of ``run_id`` that were quarantined, in the order they were."""
    q = t.quarantined_records
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(q).where(q.c.run_id == run_id).order_by(q.c.id)).mappings()
        return [QuarantinedRecord.from_row(r) for r in rows]


def end_scope(ctx: StoreContext, run_id: str, verdict: ScopeVerdict) -> ScopeVerdict:
    """Record how the run ended one scope (complete or not, why, what is protected); returns
    the verdict as recorded: incomplete, saying so, when records of the scope were quarantined.
    """
    with ctx.engine.begin() as conn:
        ctx.require_active(conn, run_id)
        quarantined_reason = _quarantine_reason(conn, run_id, verdict.scope_key)
        if quarantined_reason:
            reason = "; ".join(filter(None, (verdict.reason, quarantined_reason)))
            verdict = replace(verdict, complete=False, reason=reason)
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
    return verdict


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
