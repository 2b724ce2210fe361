"""The cleanup plan: every project a cleanup touches, with its action and reason, then applied.

For each scope the run read, the plan looks at the scope's *stale* rows (no run at or after this
one has seen or staged them) and decides, in this order:

- the scope was read incompletely, a newer completed run read it, or its reading is not trusted
  (a changed identity): ``keep``, the whole scope is held;
- the row lies under a protected location (a sub-tree the read did not enter): ``keep``;
- the run's coverage could not have seen the row (``sources.coverage.outside_coverage``):
  ``keep``, and the row is marked *out of coverage* with the reason;
- ``mark_missing`` until it has missed ``missing_runs_before_delete`` runs;
- then ``remove`` only when the source's witness confirmed, by a direct look taken after the
  run's read, that it is gone (``Witnessed``). A witness that found it keeps it (updated from
  the answer, out of coverage when that is why it was not listed); no confirmation, or an
  ``unknown`` answer, keeps it marked missing, with the reason.

Rows of scopes the run's configuration no longer names are ``keep`` and marked *orphaned*. The
deletion guard counts each scope's removals against its population *before* the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.sources.kinds import outside_coverage
from enum_pipeline.sources.witness import Absence, Candidate, Confirmation
from enum_pipeline.store import schema as t
from enum_pipeline.store.batch import chunks as _chunks
from enum_pipeline.store.history import move_to_history
from enum_pipeline.store.identity import settle_trust_of
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import CleanupEntry, ScopeCleanup
from enum_pipeline.store.runs import overlap

_ROW_COLUMNS = (
    "project_key",
    "scope_key",
    "source_kind",
    "name",
    "location",
    "vcs",
    "path",
    "attributes",
    "missed_runs",
)


def under(location: str, prefix: str) -> bool:
    """``location`` is ``prefix`` or lies below it."""
    return location == prefix or location[: len(prefix) + 1] == prefix.rstrip("/") + "/"


def sql_under(location_col, prefix: str):
    """SQL twin of ``under`` (no LIKE, so no escaping of ``%``/``_``)."""
    return sa.or_(
        location_col == prefix,
        sa.func.substr(location_col, 1, len(prefix) + 1) == prefix.rstrip("/") + "/",
    )


#: The columns a witness's answer may refresh on a row it found (renamed, moved, archived, …).
WITNESS_UPDATES = ("name", "location", "archived", "fork", "visibility")


@dataclass
class Witnessed:
    """The confirmations a cleanup gathered before planning, and why the others have none."""

    confirmations: dict[str, Confirmation] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    default: str = "no witness was asked: nothing confirms the absence"

    def why_unconfirmed(self, key: str) -> str:
        """Why ``key`` has no confirmation."""
        return self.pending.get(key) or self.default


@dataclass
class Plan:
    """What one cleanup would do; ``apply_plan`` carries it out."""

    scopes: list[ScopeCleanup] = field(default_factory=list)
    entries: list[CleanupEntry] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    mark_missing: list[str] = field(default_factory=list)
    out_of_coverage: dict[str, str] = field(default_factory=dict)
    orphans: dict[str, str] = field(default_factory=dict)
    configured: list[str] | None = None
    kept_incomplete: int = 0
    held: int = 0
    #: due for removal, waiting for a witness (what a cleanup asks its sources to look at)
    awaiting: list[Candidate] = field(default_factory=list)
    #: key -> (evidence, when) of every confirmed removal
    confirmed: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    #: key -> fresh values of a row a witness found
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    unconfirmed: int = 0
    found_present: int = 0

    @property
    def candidates(self) -> int:
        return len(self.remove) + len(self.mark_missing)


def stale_condition(generation: int):
    """SQL: the ``projects`` row is older than ``generation`` and no newer run staged it."""
    p, s, rs = t.projects, t.staged_projects, t.run_state
    seen_by_newer = (
        sa.select(s.c.project_key)
        .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
        .where(s.c.project_key == p.c.project_key, rs.c.generation > generation)
        .exists()
    )
    return sa.and_(
        p.c.seen_generation.is_not(None), p.c.seen_generation < generation, ~seen_by_newer
    )


def _superseded(conn: Connection, scope_key: str, generation: int) -> str | None:
    rs, sc = t.run_state, t.run_scopes
    newer = conn.execute(
        sa.select(rs.c.run_id)
        .select_from(sc.join(rs, rs.c.run_id == sc.c.run_id))
        .where(
            sc.c.scope_key == scope_key,
            sc.c.complete.is_(True),
            rs.c.generation > generation,
            rs.c.status == "completed",
        )
        .order_by(rs.c.generation.desc())
        .limit(1)
    ).scalar()
    return f"superseded: newer completed run {newer} read this scope" if newer else None


def _newer_staging_gone(conn: Connection, scope_key: str, generation: int) -> str | None:
    """A newer run that staged projects but whose staging was pruned: what it saw is unknown,
    so an older run's late cleanup must not judge any row of ``scope_key`` stale against it
    (I5). Unless it completed over other scopes only: every key a completed run staged carries
    its generation or a newer one in ``projects``, so none of its keys can look stale."""
    rs, s = t.run_state, t.staged_projects
    has_staging = sa.select(s.c.run_id).where(s.c.run_id == rs.c.run_id).exists()
    rows = conn.execute(
        sa.select(rs.c.run_id, rs.c.status, rs.c.scopes)
        .where(rs.c.generation > generation, rs.c.staged_count > 0, ~has_staging)
        .order_by(rs.c.generation)
    ).mappings()
    for row in rows:
        if row["status"] != "completed" or overlap(row["scopes"], [scope_key]) is not None:
            return (
                f"superseded: newer run {row['run_id']} scanned after this run and its staging "
                "was pruned"
            )
    return None


def _populations_before(conn: Connection, scope_keys: list[str], generation: int) -> dict:
    """Rows of each scope that existed before run ``generation`` flushed, in one grouped count."""
    p = t.projects
    if not scope_keys:
        return {}
    rows = conn.execute(
        sa.select(p.c.scope_key, sa.func.count())
        .where(
            p.c.scope_key.in_(scope_keys),
            sa.or_(p.c.first_seen_generation.is_(None), p.c.first_seen_generation < generation),
        )
        .group_by(p.c.scope_key)
    )
    return {scope_key: int(count) for scope_key, count in rows}


def _stale_rows(conn: Connection, scope_keys: list[str], generation: int) -> dict:
    """Each scope's rows the run did not see (by key), in one statement."""
    p = t.projects
    cols = [p.c[c] for c in _ROW_COLUMNS if c in p.c]
    extra = [p.c[c] for c in ("visibility", "archived", "fork", "topics") if c in p.c]
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in scope_keys}
    if not scope_keys:
        return out
    rows = conn.execute(
        sa.select(*cols, *extra)
        .where(p.c.scope_key.in_(scope_keys), stale_condition(generation))
        .order_by(p.c.project_key)
    ).mappings()
    for row in rows:
        out[row["scope_key"]].append(dict(row))
    return out


def _scope_locations(conn: Connection, scope_key: str) -> list[str]:
    p = t.projects
    return list(conn.execute(sa.select(p.c.location).where(p.c.scope_key == scope_key)).scalars())


def _entry(row, action: str, reason: str, confirmation: str | None = None) -> CleanupEntry:
    return CleanupEntry(
        row["project_key"],
        row["name"],
        row["scope_key"],
        row["location"],
        action,
        reason,
        confirmation,
    )


def _hold_reason(conn: Connection, run, scope) -> str | None:
    """Why the whole scope must be kept by this run's cleanup, if it must."""
    generation = int(run["generation"])
    if not scope["complete"]:
        return f"scope read incompletely: {scope['reason']}"
    superseded = _superseded(conn, scope["scope_key"], generation) or _newer_staging_gone(
        conn, scope["scope_key"], generation
    )
    if superseded:
        return superseded
    trusted = scope["trusted"]
    if trusted is None:  # completed before trust was judged at completion
        settle_trust_of(conn, run["run_id"], scope["scope_key"], generation)
        again = conn.execute(
            sa.select(t.run_scopes.c.trusted, t.run_scopes.c.identity_note).where(
                t.run_scopes.c.run_id == run["run_id"],
                t.run_scopes.c.scope_key == scope["scope_key"],
            )
        ).one()
        trusted, note = again
    else:
        note = scope["identity_note"]
    if not trusted:
        return f"held: {note or 'reading not trusted'}"
    return None


def plan_cleanup(
    conn: Connection,
    run,
    policy: CleanupPolicy,
    *,
    newest: bool,
    witnessed: Witnessed | None = None,
    candidates_only: bool = False,
) -> tuple[Plan, list[ScopeCleanup]]:
    """The plan of the cleanup of ``run`` (a completed ``run_state`` row) under ``policy``.

    ``newest``: no newer run has completed (only then does the run's configuration decide
    which rows are orphaned). ``witnessed``: the confirmations of absence gathered for it
    (none: nothing is removed; ``Plan.awaiting`` lists what a witness should look at).
    ``candidates_only``: the look before the cleanup's transaction, for ``Plan.awaiting``
    alone: no population count for the deletion guard (the transaction counts it), no orphans.
    """
    plan = Plan()
    witnessed = witnessed or Witnessed()
    generation = int(run["generation"])
    s = t.run_scopes
    scopes = (
        conn.execute(sa.select(s).where(s.c.run_id == run["run_id"]).order_by(s.c.scope_key))
        .mappings()
        .all()
    )
    keys = [scope["scope_key"] for scope in scopes]
    stale_of = _stale_rows(conn, keys, generation)
    population = {} if candidates_only else _populations_before(conn, keys, generation)
    for scope in scopes:
        sc = ScopeCleanup(scope["scope_key"], bool(scope["complete"]))
        plan.scopes.append(sc)
        stale = stale_of[scope["scope_key"]]
        sc.total = population.get(scope["scope_key"], 0)
        hold = _hold_reason(conn, run, scope)
        if hold:
            sc.skipped_reason = hold
            sc.protected = len(stale)
            if scope["complete"] and not hold.startswith("superseded"):
                plan.held += len(stale)
            else:
                plan.kept_incomplete += len(stale)
            plan.entries += [_entry(r, "keep", hold) for r in stale]
            continue
        _plan_scope(conn, plan, sc, scope, stale, run, policy, witnessed)
    if newest and run["configured_scopes"] is not None and not candidates_only:
        plan.configured = sorted(run["configured_scopes"])
        _plan_orphans(conn, plan, set(plan.configured), run["run_id"], generation)
    return plan, plan.scopes


def _plan_scope(
    conn, plan: Plan, sc: ScopeCleanup, scope, stale, run, policy, witnessed: Witnessed
) -> None:
    protected = list(scope["protected"] or [])
    reasons = scope["protected_reasons"] or {}
    coverage = scope["coverage"] or {}
    locations: Iterable[str] = ()
    if coverage.get("nested") is False:  # only the nested rule needs every location
        locations = _scope_locations(conn, scope["scope_key"])
    due = 0
    for row in stale:
        prefix = next((p for p in protected if under(row["location"], p)), None)
        if prefix is not None:
            sc.protected += 1
            plan.kept_incomplete += 1
            why = reasons.get(prefix) or "not read"
            plan.entries.append(_entry(row, "keep", f"protected: {prefix} ({why})"))
            continue
        outside = (
            outside_coverage(row["source_kind"], coverage, row, locations) if coverage else None
        )
        if outside:
            _keep_outside(plan, sc, row, outside)
            continue
        missed = row["missed_runs"] + 1
        not_seen = f"not seen by run {run['run_id']}"
        if missed < policy.missing_runs_before_delete:
            sc.candidates += 1
            plan.mark_missing.append(row["project_key"])
            plan.entries.append(
                _entry(
                    row,
                    "mark_missing",
                    f"{not_seen} (missed {missed} of "
                    f"{policy.missing_runs_before_delete} runs before removal)",
                )
            )
            continue
        confirmation = witnessed.confirmations.get(row["project_key"])
        due += _plan_due(plan, sc, row, scope, run, confirmation, witnessed, coverage, locations)
    sc.removed = due
    sc.marked_missing = sc.candidates - due
    sc.blocked_reason = policy.guard(sc.scope_key, due, sc.total)


def _keep_outside(plan: Plan, sc: ScopeCleanup, row, outside: str) -> None:
    sc.out_of_coverage += 1
    plan.out_of_coverage[row["project_key"]] = outside
    plan.entries.append(_entry(row, "keep", f"out of coverage: {outside}"))


def _candidate(row, scope) -> Candidate:
    attrs = row["attributes"]
    return Candidate(
        project_key=row["project_key"],
        scope_key=row["scope_key"],
        source_kind=row["source_kind"],
        name=row["name"],
        location=row["location"],
        attributes=attrs if isinstance(attrs, dict) else {},
        identity=scope["identity"] or {},
        coverage=scope["coverage"] or {},
    )


def _plan_due(plan, sc, row, scope, run, confirmation, witnessed, coverage, locations) -> int:
    """Plan one row due for removal by what its witness said; 1 when it is removed."""
    key = row["project_key"]
    not_seen = f"not seen by run {run['run_id']} (missed {row['missed_runs'] + 1} runs)"
    finished = run["finished_at"]
    answer = confirmation.answer if confirmation is not None else None
    if answer in (Absence.GONE, Absence.PRESENT) and (
        finished is None or confirmation.checked_at <= finished
    ):
        # a look older than the run's read says nothing of what the read missed, either way:
        # gone is not proven, and "it exists" (with its facts) may be what the read replaced
        answer, why = None, "its confirmation was taken before the run's read ended"
    elif confirmation is None:
        plan.awaiting.append(_candidate(row, scope))
        why = witnessed.why_unconfirmed(key)
    else:
        why = confirmation.evidence
    if answer == Absence.GONE:
        sc.candidates += 1
        plan.remove.append(key)
        plan.confirmed[key] = (confirmation.evidence, confirmation.checked_at)
        reason = f"{not_seen}; confirmed gone: {confirmation.evidence}"
        plan.entries.append(_entry(row, "remove", reason, confirmation.evidence))
        return 1
    if answer == Absence.PRESENT:
        plan.found_present += 1
        fresh = {k: v for k, v in confirmation.updates.items() if k in WITNESS_UPDATES}
        if fresh:
            plan.updates[key] = fresh
        outside = confirmation.outside or outside_coverage(
            row["source_kind"], coverage, {**row, **fresh}, locations
        )
        if outside:
            _keep_outside(plan, sc, row, f"{outside} (found by its witness: {why})")
        else:
            reason = f"{not_seen}, but it exists: {why}"
            plan.entries.append(_entry(row, "keep", reason, why))
        return 0
    sc.candidates += 1
    plan.unconfirmed += 1
    plan.mark_missing.append(key)
    reason = f"{not_seen}; kept: absence not confirmed: {why}"
    plan.entries.append(_entry(row, "mark_missing", reason, why))
    return 0


def _plan_orphans(
    conn: Connection, plan: Plan, configured: set[str], run_id: str, generation: int
) -> None:
    """Rows of scopes the run's configuration does not name, unless a newer run (still active,
    begun under a newer configuration) has seen them."""
    p = t.projects
    rows = conn.execute(
        sa.select(*[p.c[c] for c in _ROW_COLUMNS])
        .where(p.c.scope_key.not_in(sorted(configured)) if configured else sa.true())
        .where(sa.or_(p.c.seen_generation.is_(None), p.c.seen_generation <= generation))
        .order_by(p.c.project_key)
    ).mappings()
    for row in rows:
        reason = f"orphan: scope {row['scope_key']} is not configured (run {run_id})"
        plan.orphans[row["project_key"]] = reason
        plan.entries.append(_entry(row, "keep", reason))


def _by_reason(reasons: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """``(reason, keys)`` for each distinct reason of ``reasons`` (key -> why), in chunks."""
    grouped: dict[str, list[str]] = {}
    for k, reason in reasons.items():
        grouped.setdefault(reason, []).append(k)
    for reason, keys in grouped.items():
        for chunk in _chunks(keys):
            yield reason, chunk


def apply_marks(conn: Connection, plan: Plan, now: datetime) -> None:
    """Write the plan's marks: out of coverage (with the reason), orphaned, and clear the
    orphan marks of scopes the configuration names again; refresh the rows a witness found."""
    p = t.projects
    for key, fresh in plan.updates.items():
        conn.execute(sa.update(p).where(p.c.project_key == key).values(**fresh))
    for reason, chunk in _by_reason(plan.out_of_coverage):
        conn.execute(
            sa.update(p)
            .where(p.c.project_key.in_(chunk))
            .values(
                out_of_coverage_since=sa.func.coalesce(p.c.out_of_coverage_since, now),
                out_of_coverage_reason=reason,
            )
        )
    for reason, chunk in _by_reason(plan.orphans):
        conn.execute(
            sa.update(p)
            .where(p.c.project_key.in_(chunk), p.c.orphaned_since.is_(None))
            .values(orphaned_since=now, orphan_reason=reason)
        )
    if plan.configured:
        conn.execute(
            sa.update(p)
            .where(p.c.scope_key.in_(plan.configured), p.c.orphaned_since.is_not(None))
            .values(orphaned_since=None, orphan_reason=None)
        )


def apply_removals(
    conn: Connection, plan: Plan, run, policy: CleanupPolicy, now: datetime
) -> tuple[list[str], int]:
    """Mark the candidates missing and move the due ones to history. Returns (removed keys,
    rows marked missing). Every statement re-checks staleness: a concurrent flush may have
    refreshed a planned row meanwhile, and such a row is left alone."""
    p = t.projects
    generation = int(run["generation"])
    stale = stale_condition(generation)
    marked = 0
    for chunk in _chunks(plan.remove + plan.mark_missing):
        marked += conn.execute(
            sa.update(p)
            .where(p.c.project_key.in_(chunk), stale)
            .values(
                missed_runs=p.c.missed_runs + 1,
                missing_since=sa.func.coalesce(p.c.missing_since, now),
                out_of_coverage_since=None,
                out_of_coverage_reason=None,
            )
        ).rowcount
    reasons = {e.project_key: e.reason for e in plan.entries if e.action == "remove"}
    removed: list[str] = []
    for chunk in _chunks(sorted(plan.remove)):
        due = sa.and_(
            p.c.project_key.in_(chunk),
            stale,
            p.c.missed_runs >= policy.missing_runs_before_delete,
        )
        removed += move_to_history(
            conn, due, run["run_id"], now, reasons, confirmations=plan.confirmed
        )
    return removed, marked - len(removed)
