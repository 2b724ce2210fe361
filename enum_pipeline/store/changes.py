"""Read-only views for operators: a run's delta, who holds the inventory, what can be restored,
which cleanups are blocked (the sentences built from them are ``enum_pipeline.output``'s).

Nothing here writes. ``run_changes`` is CONTRACTS.md 5: what one run added, changed and (through
its cleanup) removed, by project.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from enum_pipeline.store import reads, runs
from enum_pipeline.store import schema as t
from enum_pipeline.store.batch import chunks
from enum_pipeline.store.records import CleanupStatus, RunInfo, RunStatus, utcnow

if TYPE_CHECKING:
    from enum_pipeline.store.context import StoreContext

# Columns whose difference is not a change an operator cares about (bookkeeping, or derived).
_NOT_COMPARED = {"content_hash", "scope_key", "source_kind"}
CHANGE_KINDS = ("added", "changed", "removed")


@dataclass(frozen=True)
class ProjectChange:
    """One project a run added, changed or removed (``fields``: the columns that changed)."""

    project_key: str
    name: str
    scope_key: str
    change: str
    fields: tuple[str, ...] = ()
    location: str = ""


@dataclass(frozen=True)
class Restorable:
    """A cleanup whose removed projects can still be restored."""

    run_id: str
    removed_at: datetime
    count: int
    names: list[str] = field(default_factory=list)


def run_changes(ctx: StoreContext, run_id: str) -> list[ProjectChange]:
    """What run ``run_id`` added, changed and removed, added first, then changed, then removed.

    Added and changed are read from ``projects`` (a row first seen, or whose content changed,
    during the run's flush) joined with the run's staged rows; the changed columns come from the
    newest earlier staged row of the project (empty when that staging was pruned). A later run
    that changed a project again hides the earlier change. Removed: the run's cleanup history.
    """
    info = reads.get_run(ctx, run_id)
    p, s, rs = t.projects, t.staged_projects, t.run_state
    since = info.started_at
    until = info.finished_at or info.heartbeat_at
    # Runs over other scopes may be active at once, so a time window alone is not this run's:
    # a row is added by the flush that inserted it (its generation), and its change belongs to
    # the run that last saw it when its flush's time falls in that run's own window.
    window = p.c.first_seen_generation == info.generation
    last = rs.alias("last_seer")
    in_last_window = sa.and_(
        p.c.changed_at >= last.c.started_at,
        p.c.changed_at <= sa.func.coalesce(last.c.finished_at, last.c.heartbeat_at),
    )
    changed_window = sa.and_(
        p.c.changed_at >= since,
        p.c.changed_at <= until,
        sa.or_(p.c.run_id == run_id, last.c.run_id.is_(None), ~in_last_window),
    )
    compared = [c for c in t.PROJECT_DATA_COLUMNS if c not in _NOT_COMPARED]
    out: list[ProjectChange] = []
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(p.c.project_key, p.c.name, p.c.scope_key, p.c.location, window.label("new"))
            .select_from(
                s.join(p, p.c.project_key == s.c.project_key).outerjoin(
                    last, last.c.run_id == p.c.run_id
                )
            )
            .where(s.c.run_id == run_id, sa.or_(window, changed_window))
            .order_by(p.c.name, p.c.project_key)
        ).all()
        changed_keys = [r.project_key for r in rows if not r.new]
        before: dict[str, dict[str, Any]] = {}
        now_rows: dict[str, dict[str, Any]] = {}
        for chunk in chunks(changed_keys):
            for r in conn.execute(
                sa.select(s, rs.c.generation)
                .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
                .where(s.c.project_key.in_(chunk), rs.c.generation <= info.generation)
                .order_by(rs.c.generation)
            ).mappings():
                target = now_rows if r["run_id"] == run_id else before
                target[r["project_key"]] = dict(r)
        for r in rows:
            if r.new:
                out.append(
                    ProjectChange(r.project_key, r.name, r.scope_key, "added", (), r.location)
                )
                continue
            old, new = before.get(r.project_key), now_rows.get(r.project_key)
            fields = (
                tuple(c for c in compared if old[c] != new[c]) if old is not None and new else ()
            )
            out.append(
                ProjectChange(r.project_key, r.name, r.scope_key, "changed", fields, r.location)
            )
        h = t.removed_projects
        # Added by this run, removed since by a later cleanup: the history row still says when
        # the project was first seen.
        added_back: set[str] = set()
        gone = (
            sa.select(s.c.project_key)
            .where(s.c.run_id == run_id)
            .where(~sa.exists().where(p.c.project_key == s.c.project_key))
        )
        for r in conn.execute(
            sa.select(h.c.project_key, h.c.scope_key, h.c.row).where(
                h.c.project_key.in_(gone), h.c.removed_by_run_id != run_id
            )
        ):
            first = _aware((r.row or {}).get("first_seen_at"))
            if r.project_key not in added_back and first and since <= first <= until:
                added_back.add(r.project_key)
                out.append(_from_history(r, "added"))
        for r in conn.execute(
            sa.select(h.c.project_key, h.c.scope_key, h.c.row)
            .where(h.c.removed_by_run_id == run_id)
            .order_by(h.c.id)
        ):
            out.append(_from_history(r, "removed"))
    order = {kind: i for i, kind in enumerate(CHANGE_KINDS)}
    out.sort(key=lambda c: (order[c.change], c.name, c.project_key))
    return out


def _from_history(r, change: str) -> ProjectChange:
    """The change of a project from its history row (``project_key``, ``scope_key``, ``row``)."""
    row = r.row or {}
    name, location = row.get("name", r.project_key), row.get("location", "")
    return ProjectChange(r.project_key, name, r.scope_key, change, (), location)


def _aware(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Holder(NamedTuple):
    """An active run in the way of a new one: why a new run would take it over (None: it holds
    on), and what the two share ("scope KEY" or "the whole inventory")."""

    run: RunInfo
    takeover: str | None
    scope: str


def holder(ctx: StoreContext, scopes: Iterable[str] | None = None) -> Holder | None:
    """The active run over a scope of ``scopes`` (None: any), preferring one that holds on."""
    wanted = sorted(set(scopes)) if scopes is not None else None
    found: Holder | None = None
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.run_state)
            .where(t.run_state.c.status == RunStatus.ACTIVE)
            .order_by(t.run_state.c.generation)
        ).mappings()
        for row in rows.all():
            shared = runs.overlap(row["scopes"], wanted)
            if shared is None:
                continue
            reason = runs._abandon_reason(ctx, conn, row, utcnow())
            if reason is None:
                return Holder(RunInfo.from_row(row), None, shared)
            found = found or Holder(RunInfo.from_row(row), reason, shared)
    return found


def restorable_cleanups(ctx: StoreContext, names: int = 5) -> list[Restorable]:
    """Cleanups with removed projects not yet restored, newest first (``names``: a sample)."""
    h = t.removed_projects
    with ctx.engine.connect() as conn:
        groups = conn.execute(
            sa.select(h.c.removed_by_run_id, sa.func.max(h.c.removed_at), sa.func.count())
            .where(h.c.restored_at.is_(None))
            .group_by(h.c.removed_by_run_id)
            .order_by(sa.func.max(h.c.id).desc())
        ).all()
        out = []
        for run_id, removed_at, count in groups:
            rows = conn.execute(
                sa.select(h.c.project_key, h.c.row)
                .where(h.c.removed_by_run_id == run_id, h.c.restored_at.is_(None))
                .order_by(h.c.id)
                .limit(names)
            ).all()
            sample = [(r.row or {}).get("name", r.project_key) for r in rows]
            removed = t.UTCDateTime().process_result_value(removed_at, conn.dialect)
            out.append(Restorable(run_id, removed, int(count), sample))
    return out


def blocked_cleanups(ctx: StoreContext, runs: int = 50) -> list[str]:
    """The runs whose cleanup is blocked among the newest ``runs`` runs, newest first."""
    rs, c = t.run_state, t.cleanups
    newest = (
        sa.select(rs.c.run_id, rs.c.generation)
        .order_by(rs.c.generation.desc())
        .limit(runs)
        .subquery()
    )
    with ctx.engine.connect() as conn:
        blocked = conn.execute(
            sa.select(newest.c.run_id)
            .join(c, c.c.run_id == newest.c.run_id)
            .where(c.c.status == CleanupStatus.BLOCKED)
            .order_by(newest.c.generation.desc())
        ).scalars()
        return list(blocked)


def scope_summary(ctx: StoreContext) -> list[dict[str, Any]]:
    """Per scope of ``projects``: total, missing, out of coverage, and whether the newest
    read of the scope was incomplete."""
    p, sc, rs = t.projects, t.run_scopes, t.run_state
    with ctx.engine.connect() as conn:
        counts = conn.execute(
            sa.select(
                p.c.scope_key,
                sa.func.count(),
                sa.func.count(p.c.missing_since),
            )
            .group_by(p.c.scope_key)
            .order_by(p.c.scope_key)
        ).all()
        newest = sa.select(sc.c.scope_key, sc.c.complete, sc.c.reason, rs.c.generation).select_from(
            sc.join(rs, rs.c.run_id == sc.c.run_id)
        )
        latest: dict[str, tuple[bool, str | None]] = {}
        for r in conn.execute(newest.order_by(rs.c.generation)):
            latest[r.scope_key] = (bool(r.complete), r.reason)
    out = []
    for scope_key, total, missing in counts:
        complete, reason = latest.get(scope_key, (True, None))
        out.append(
            {
                "scope": scope_key,
                "total": int(total),
                "missing": int(missing),
                "out_of_coverage": 0,
                "incomplete": not complete,
                "reason": reason or "",
            }
        )
    for scope_key, (complete, reason) in latest.items():
        if scope_key not in {o["scope"] for o in out} and not complete:
            out.append(
                {
                    "scope": scope_key,
                    "total": 0,
                    "missing": 0,
                    "out_of_coverage": 0,
                    "incomplete": True,
                    "reason": reason or "",
                }
            )
    return out
