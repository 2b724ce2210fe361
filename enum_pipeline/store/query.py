"""The inventory as answers: filtered project rows, in the shape the CLI and exports print
(``output_row``, ``OUTPUT_COLUMNS``); turning them into CSV, JSON or a table is
``enum_pipeline.output``'s.

Read-only. ``select_projects`` applies a ``ProjectFilter``; a filter value the inventory cannot
hold (an unknown source kind, scope, language, …) raises ``FilterError`` with a one-line message
rather than returning an empty answer that looks like "none".
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.kinds import FILLED_COLUMNS
from enum_pipeline.store import schema as t

#: What ``status`` a project row has: ``present`` (seen by the newest runs), ``missing`` (a
#: complete scope no longer lists it; kept until the cleanup policy removes it),
#: ``out_of_coverage`` (a run's coverage could not have seen it: kept, reason in
#: ``out_of_coverage_reason``), ``orphaned`` (its scope is no longer configured: kept until
#: ``enum-pipeline prune-orphans``).
STATUSES = ("present", "missing", "out_of_coverage", "orphaned")
VISIBILITIES = ("public", "internal", "private")

#: Every column of the ``json`` / ``csv`` output, in order.
OUTPUT_COLUMNS: tuple[str, ...] = (
    "project_key",
    "name",
    "location",
    "source_kind",
    "scope_key",
    "vcs",
    "remote_url",
    "status",
    *PRODUCT_COLUMNS,
    "normalized_remote",
    "path",
    "head_commit",
    "last_commit_at",
    "markers",
    "first_seen_at",
    "last_seen_at",
    "missing_since",
)


class FilterError(ValueError):
    """A filter value no project of this inventory can have."""


@dataclass(frozen=True)
class ProjectFilter:
    """Which projects to list; None means "any"."""

    source: str | None = None
    scope: str | None = None
    name: str | None = None  # a shell-style pattern, matched case-insensitively
    archived: bool | None = None
    fork: bool | None = None
    visibility: str | None = None
    language: str | None = None
    topic: str | None = None
    stale_days: int | None = None  # last activity older than this many days (unknown: left out)
    status: str | None = None


def project_status(row: Mapping[str, Any]) -> str:
    """One of ``STATUSES``: orphaned, then out of coverage, then missing, else present."""
    if row.get("orphaned_since") is not None:
        return "orphaned"
    if row.get("out_of_coverage_since") is not None:
        return "out_of_coverage"
    return "missing" if row.get("missing_since") is not None else "present"


def _distinct(conn, column) -> list[Any]:
    return [v for v in conn.execute(sa.select(column).distinct()).scalars() if v is not None]


def _one_of(what: str, value: str, known: Iterable[str], *, show: int = 8) -> str:
    """``value`` as the inventory spells it (case-insensitive), else ``FilterError``."""
    known = sorted(set(known))
    for k in known:
        if k.lower() == value.lower():
            return k
    more = f" and {len(known) - show} more" if len(known) > show else ""
    listed = ", ".join(known[:show]) + more
    raise FilterError(f"unknown {what} {value!r}; known: {listed or 'none'}")


def _check(conn, flt: ProjectFilter) -> ProjectFilter:
    p = t.projects.c
    values: dict[str, Any] = {}
    if flt.source is not None:
        values["source"] = _one_of("--source", flt.source, FILLED_COLUMNS)
    if flt.visibility is not None:
        values["visibility"] = _one_of("--visibility", flt.visibility, VISIBILITIES)
    if flt.status is not None:
        values["status"] = _one_of("--status", flt.status, STATUSES)
    if flt.scope is not None:
        values["scope"] = _one_of("--scope", flt.scope, _distinct(conn, p.scope_key))
    if flt.language is not None:
        values["language"] = _one_of("--language", flt.language, _distinct(conn, p.language))
    if flt.topic is not None:
        topics = {x for ts in _distinct(conn, p.topics) for x in ts or ()}
        values["topic"] = _one_of("--topic", flt.topic, topics)
    if flt.stale_days is not None and flt.stale_days < 0:
        raise FilterError(f"--stale-days must be 0 or more, not {flt.stale_days}")
    return ProjectFilter(**{**flt.__dict__, **values})


def select_projects(
    engine: Engine, flt: ProjectFilter | None = None, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Rows of ``projects`` matching ``flt``, ordered by source, scope and location."""
    flt = flt or ProjectFilter()
    p = t.projects.c
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        flt = _check(conn, flt)
        stmt = sa.select(t.projects).order_by(p.source_kind, p.scope_key, p.location)
        for column, value in (
            (p.source_kind, flt.source),
            (p.scope_key, flt.scope),
            (p.visibility, flt.visibility),
            (p.language, flt.language),
            (p.archived, flt.archived),
            (p.fork, flt.fork),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        kept = (p.orphaned_since.is_(None), p.out_of_coverage_since.is_(None))
        if flt.status == "missing":
            stmt = stmt.where(p.missing_since.is_not(None), *kept)
        elif flt.status == "present":
            stmt = stmt.where(p.missing_since.is_(None), *kept)
        elif flt.status == "out_of_coverage":
            stmt = stmt.where(p.out_of_coverage_since.is_not(None), kept[0])
        elif flt.status == "orphaned":
            stmt = stmt.where(p.orphaned_since.is_not(None))
        if flt.stale_days is not None:
            stmt = stmt.where(p.last_activity_at < now - timedelta(days=flt.stale_days))
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if flt.topic is not None:
        rows = [r for r in rows if flt.topic in (r.get("topics") or ())]
    if flt.name is not None:
        pattern = flt.name.lower()
        rows = [r for r in rows if fnmatch.fnmatchcase(r["name"].lower(), pattern)]
    return rows


def output_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One project as the outputs show it: ``OUTPUT_COLUMNS`` in order, ``status`` derived."""
    return {c: project_status(row) if c == "status" else row.get(c) for c in OUTPUT_COLUMNS}


def latest_completed_run(store: Any) -> str | None:
    """The id of the newest ``completed`` run, or None."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(t.run_state.c.run_id)
            .where(t.run_state.c.status == "completed")
            .order_by(t.run_state.c.generation.desc())
            .limit(1)
        ).scalar()
