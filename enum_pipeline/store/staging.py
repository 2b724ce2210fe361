"""Staging: what a run saw, written as it scans (stage, end_scope), read back, and pruned after.

A record becomes one tuple in ``staged_projects``' column order (derived from the schema, so new
columns flow through): its fields as they are, its JSON columns as text encoded once, and its
``content_hash`` built from those same encodings (``row_of``; the digest is
``ProjectRecord.content_hash()``'s, byte for byte).
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Iterator
from dataclasses import fields
from json.encoder import encode_basestring
from typing import Any

import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.store import schema as t
from enum_pipeline.store.context import StoreContext, set_run
from enum_pipeline.store.dialect import STAGE_COLUMNS
from enum_pipeline.store.records import RunStatus, utcnow
from enum_pipeline.store.runs import heartbeat

#: Staging of at least this many newest completed runs is always kept (run deltas read the two
#: newest; CONTRACTS.md 5).
KEEP_COMPLETED = 2

# The JSON encoding ``ProjectRecord.content_hash`` uses, as one reusable encoder.
_encode = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value.__class__ is str:
        return encode_basestring(value)
    return _encode(value)


def _markers(value: Any) -> str:
    return "null" if value is None else _encode(sorted(value))


def _timestamp(value: Any) -> str:
    return "null" if value is None else encode_basestring(value.isoformat())


# Fields the digest covers, in its (sorted) key order: each one's rendered key and encoder.
_HASHED = sorted(f.name for f in fields(ProjectRecord) if f.name != "project_key")
_HASH_KEYS = [encode_basestring(name) + ": " for name in _HASHED]
_ENCODERS = [{"markers": _markers, "last_commit_at": _timestamp}.get(n, _scalar) for n in _HASHED]
_get_hashed = operator.attrgetter(*_HASHED)
_JSON_COLUMNS = {c.name for c in t.staged_projects.columns if isinstance(c.type, sa.JSON)}
# What a staged JSON column holds for a None field: markers and attributes always hold a value;
# the others (topics, remotes) stay NULL, "not known", never an invented empty list.
_JSON_DEFAULT = {"attributes": "{}", "markers": "[]"}


def _positions() -> list[int]:
    """Where each staged column's value sits in ``[run_id, digest, project_key, None,
    *fields in _HASHED order, *their JSON texts]`` (see ``row_of``)."""
    n = len(_HASHED)
    out = []
    for name in STAGE_COLUMNS:
        if name == "run_id":
            out.append(0)
        elif name == "content_hash":
            out.append(1)
        elif name == "project_key":
            out.append(2)
        elif name in _HASHED:
            i = _HASHED.index(name)
            out.append(4 + n + i if name in _JSON_COLUMNS else 4 + i)
        else:
            out.append(3)  # a column no record field fills
    return out


_pick = operator.itemgetter(*_positions())


def row_of(run_id: str, record: ProjectRecord) -> tuple:
    """``record`` as one ``staged_projects`` row (a tuple in ``STAGE_COLUMNS`` order)."""
    values = _get_hashed(record)
    texts = [encode(v) for encode, v in zip(_ENCODERS, values, strict=True)]
    raw = "{" + ", ".join([k + v for k, v in zip(_HASH_KEYS, texts, strict=True)]) + "}"
    digest = hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest()
    for i, name in _NULLABLE_JSON:
        if texts[i] == "null":
            texts[i] = _JSON_DEFAULT.get(name)
    return _pick([run_id, digest, record.project_key, None, *values, *texts])


_NULLABLE_JSON = [(i, n) for i, n in enumerate(_HASHED) if n in _JSON_COLUMNS]


def stage(ctx: StoreContext, run_id: str, records: Iterable[ProjectRecord]) -> int:
    """Durably stage a batch of records for ``run_id``; returns how many were new.

    A key seen twice in one run (overlapping roots) is kept once, first sighting wins.
    """
    rows = [row_of(run_id, r) for r in records]
    if not rows:
        heartbeat(ctx, run_id)
        return 0
    with ctx.engine.begin() as conn:
        ctx.require_active(conn, run_id)
        inserted = ctx.dialect.stage_rows(conn, run_id, rows)
        set_run(
            conn,
            run_id,
            scanned_count=t.run_state.c.scanned_count + len(rows),
            staged_count=t.run_state.c.staged_count + inserted,
            heartbeat_at=utcnow(),
        )
    return inserted


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
