"""The proof, part 1: a model-based test of the store against invariants I1–I6 of DESIGN.md.

A hypothesis state machine keeps a pure-Python model of the world (which projects exist in three
scopes; they appear, disappear and return) and of the inventory the store must hold. Its rules
run whole enumeration runs the way the Dagster steps do (begin → stage in batches → end_scope →
flush → verify → complete → cleanup), with random scope verdicts (complete, unreadable,
complete with a protected sub-folder, partial read flagged incomplete, not read at all), a fault
injected at a random store step (``helpers.fail_on_sql``: the statement raises, its transaction
rolls back), right after a step committed (the op crashes), or inside the database (a trigger
silently drops an inserted row: ``helpers.install_fault("lose_write")``), and the failure path
of the steps (``store.fail`` / ``fail_attempt``), plus ``prune_staging`` after completion as the
``run_state`` asset does. Other rules: late cleanups of older runs (also while a run is active),
cleanup re-runs, approvals of blocked cleanups, restores, runs abandoned without ``fail`` (taken
over by the next ``begin`` once the heartbeat expired or, on PostgreSQL, at once when the
holder's database session ends; or reaped), re-execution from failure
(``resume``), a different filesystem mounted at a root (``st_dev`` fingerprint). After every
store call the database is checked against I1–I6, then against the model's prediction of every
row, run status, cleanup record and history entry.

Run more (``ENUM_PIPELINE_MODEL_STEPS`` sets the rules per example)::

    ENUM_PIPELINE_MODEL_EXAMPLES=500 .venv/bin/pytest enum_pipeline_tests/test_model_based.py -s
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import permutations
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import (
    CleanupPolicy,
    CleanupRefusedError,
    FlushVerificationError,
    InventoryStore,
    RunActiveError,
    StoreError,
    utcnow,
)
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import (
    SCOPE,
    clear_faults,
    fail_on_sql,
    install_fault,
    key,
    lease_holders,
    new_run_id,
    rec,
    run_once,
    terminate_backends,
)

SCOPES = ("fs:/m/s0", "fs:/m/s1", "fs:/m/s2")
#: Projects each scope may hold; ``locked/`` is the sub-folder a source may fail to read,
#: ``lockedness/`` its sibling that a protected prefix must not cover.
NAMES = ("p0", "p1", "p2", "p3", "p4", "locked/q0", "locked/q1", "lockedness/r0")
VERDICTS = ("complete", "complete", "complete", "protected", "incomplete", "partial", "absent")

#: SQL that each store step emits (seen with echo); a fault stops the first statement matching.
#: PostgreSQL stages through COPY on the raw psycopg cursor, which SQLAlchemy events do not see,
#: so there the staging fault hits the progress UPDATE of the same transaction instead.
NEEDLES: dict[str, tuple[str, ...]] = {
    "begin": ("UPDATE inventory SET last_generation", "INSERT INTO run_state"),
    "stage": ("INSERT INTO staged_projects", "scanned_count=("),
    "end_scope": ("INSERT INTO run_scopes",),
    "flush": ("INSERT INTO projects", "flushed_count="),
    "verify": ("SET last_confirmed_run_id", "confirmed_count="),
    "complete": ("SET status=",),
    "resume": ("UPDATE run_state SET",),
    "cleanup": (
        "SET missing_since",
        "INSERT INTO removed_projects",
        "DELETE FROM projects",
        "removed_count=",
        "INSERT INTO cleanups",
        "UPDATE cleanups",
    ),
    "approve": ("UPDATE cleanups",),
    "restore": ("INSERT INTO projects", "SET restored_at"),
}
#: Steps of an enumeration run whose op may crash after the store call committed.
CRASHABLE = {"begin", "stage", "end_scope", "flush", "verify", "complete", "resume"}
QUIET = 80  # weight of "nothing happens" at a store call
#: I1/I5 read "no newer run has seen it" as: no newer run has *staged* it either (its scan saw
#: the project even if its flush has not happened yet, or never will). False: only a newer
#: run's committed flush (``seen_generation``) counts, as the store implements it today.
STAGED_IS_SEEN = True

STATS: dict[str, Counter] = {}


class InjectedFault(RuntimeError):
    """The failure the test injects (never raised by the store itself)."""


_RUN_IDS = iter(range(1, 10**12))


def _run_id() -> str:
    """A run id shaped like a Dagster run id; sequential, so a replayed example draws the same."""
    return f"00000000-0000-4000-8000-{next(_RUN_IDS):012d}"


def _under(location: str, prefix: str) -> bool:
    """Python twin of ``store.cleanup._under``."""
    return location == prefix or location[: len(prefix) + 1] == prefix.rstrip("/") + "/"


def _root(scope: str) -> str:
    return scope.split(":", 1)[1]


# --------------------------------------------------------------------------------- the model


@dataclass
class MRow:
    scope: str
    location: str
    seen_gen: int
    run_id: str
    confirmed_gen: int | None = None
    confirmed_run: str | None = None
    missed: int = 0


@dataclass
class MRun:
    run_id: str
    gen: int
    status: str = "active"
    attempt: str = ""
    flush_succeeded: bool = False
    flushed: bool = False
    staged: dict[str, MRow] = field(default_factory=dict)
    verdicts: dict[str, tuple[bool, tuple[str, ...], int]] = field(default_factory=dict)
    staging_kept: bool = True  # prune_staging has not dropped its staged rows
    session_gone: bool = False  # PostgreSQL: the holder's database session (its lease) ended


@dataclass
class MCleanup:
    status: str
    candidates: int
    approved_max: int | None = None


@dataclass
class MHist:
    key: str
    run_id: str
    row: MRow
    restored: bool = False


@dataclass
class CleanupPlan:
    refused: bool = False
    already_done: bool = False
    status: str = "noop"
    removed: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    candidates: int = 0


class Model:
    """What the inventory must hold: a pure-Python twin of the store's lifecycle."""

    def __init__(self) -> None:
        self.world: dict[str, set[str]] = {s: set() for s in SCOPES}
        self.device: dict[str, int] = dict.fromkeys(SCOPES, 1)  # st_dev of each root
        self.rows: dict[str, MRow] = {}
        self.runs: dict[str, MRun] = {}
        self.order: list[str] = []  # run ids by generation
        self.last_gen = 0
        self.cleanups: dict[str, MCleanup] = {}
        self.history: list[MHist] = []
        self.max_flushed_gen: dict[str, int] = {}  # newest generation whose flush wrote the key
        self.max_staged_gen: dict[str, int] = {}  # newest generation whose scan staged the key

    @property
    def active(self) -> MRun | None:
        return next((r for r in self.runs.values() if r.status == "active"), None)

    def begin(self, run_id: str, attempt: str) -> MRun:
        if self.active is not None:
            self.active.status = "failed"
        self.last_gen += 1
        run = MRun(run_id, self.last_gen, attempt=attempt)
        self.runs[run_id] = run
        self.order.append(run_id)
        return run

    def stage(self, run: MRun, names: list[tuple[str, str]]) -> None:
        for scope, name in names:
            k = key(name, scope)
            self.max_staged_gen[k] = max(self.max_staged_gen.get(k, 0), run.gen)
            run.staged.setdefault(k, MRow(scope, f"{_root(scope)}/{name}", run.gen, run.run_id))

    def flush(self, run: MRun) -> None:
        run.flushed = True
        for k, staged in run.staged.items():
            row = self.rows.get(k)
            if row is None:
                self.rows[k] = replace(staged, seen_gen=run.gen, run_id=run.run_id)
            elif row.seen_gen <= run.gen:
                row.seen_gen, row.run_id, row.missed = run.gen, run.run_id, 0
            self.max_flushed_gen[k] = max(self.max_flushed_gen.get(k, 0), run.gen)

    def verify(self, run: MRun) -> None:
        for row in self.rows.values():
            if row.seen_gen == run.gen:
                row.confirmed_gen, row.confirmed_run = run.gen, run.run_id
        run.flush_succeeded = True

    def complete(self, run: MRun) -> str:
        if run.status == "active":
            run.status = "completed" if run.flush_succeeded else "failed"
        return run.status

    def fail(self, run: MRun) -> None:
        if run.status == "active":
            run.status = "failed"

    def plan_cleanup(self, run_id: str, policy: CleanupPolicy, dry_run: bool) -> CleanupPlan:
        """What ``safe_cleanup_old_projects`` must do, computed from the model alone."""
        run = self.runs[run_id]
        if run.status != "completed" or not run.flush_succeeded:
            return CleanupPlan(refused=True)
        record = self.cleanups.get(run_id)
        if record is not None and record.status in ("done", "noop") and not dry_run:
            return CleanupPlan(already_done=True, status=record.status)
        plan = CleanupPlan()
        blocked = False
        due_total = 0
        for scope, (complete, protected, _dev) in run.verdicts.items():
            in_scope = [k for k, r in self.rows.items() if r.scope == scope]
            # stale: no run at or after this one wrote it, nor scanned it (staged, unflushed)
            stale = [
                k
                for k in in_scope
                if self.rows[k].seen_gen < run.gen
                and not (
                    STAGED_IS_SEEN
                    and any(
                        k in r.staged
                        for r in self.runs.values()
                        if r.gen > run.gen and r.staging_kept
                    )
                )
            ]
            if not complete or self._superseded(scope, run.gen) or self._remounted(scope, run):
                continue
            candidates = [
                k for k in stale if not any(_under(self.rows[k].location, p) for p in protected)
            ]
            due = [
                k
                for k in candidates
                if self.rows[k].missed + 1 >= policy.missing_runs_before_delete
            ]
            blocked |= policy.guard(scope, len(due), len(in_scope)) is not None
            due_total += len(due)
            plan.candidates += len(candidates)
            plan.removed += sorted(due)
            plan.marked += [k for k in candidates if k not in due]
        approved_max = record.approved_max if record is not None else None
        if blocked and approved_max is not None and due_total <= approved_max:
            blocked = False
        if blocked:
            plan.status = "blocked"
        elif plan.candidates == 0:
            plan.status = "noop"
        else:
            plan.status = "done"
        if plan.status != "done":
            plan.removed, plan.marked = [], []
        return plan

    def _superseded(self, scope: str, gen: int) -> bool:
        return any(
            r.gen > gen and r.status == "completed" and r.verdicts.get(scope, (False,))[0]
            for r in self.runs.values()
        )

    def _remounted(self, scope: str, run: MRun) -> bool:
        """The scope's device differs from the previous completed complete read of it."""
        before = [
            r
            for r in self.runs.values()
            if r.gen < run.gen and r.status == "completed" and r.verdicts.get(scope, (False,))[0]
        ]
        if not before:
            return False
        previous = max(before, key=lambda r: r.gen)
        return previous.verdicts[scope][2] != run.verdicts[scope][2]

    def prune_staging(self, keep: int) -> None:
        newest = {r.run_id for r in sorted(self.runs.values(), key=lambda r: -r.gen)[:keep]}
        for r in self.runs.values():
            if r.run_id not in newest and r.status != "active":
                r.staging_kept = False

    def apply_cleanup(self, run_id: str, plan: CleanupPlan) -> None:
        for k in plan.removed + plan.marked:
            self.rows[k].missed += 1
        for k in sorted(plan.removed):
            self.history.append(MHist(k, run_id, replace(self.rows.pop(k))))
        previous = self.cleanups.get(run_id)
        approved = previous.approved_max if previous is not None else None
        self.cleanups[run_id] = MCleanup(plan.status, plan.candidates, approved)

    def restore(self, run_id: str) -> list[str]:
        restored = []
        entries = [h for h in self.history if h.run_id == run_id and not h.restored]
        present = set(self.rows)
        for h in entries:
            if h.key not in present:
                self.rows[h.key] = replace(h.row, missed=0)
                restored.append(h.key)
            h.restored = True
        return restored


# ------------------------------------------------------------------------- database snapshot


@dataclass
class Snapshot:
    rows: dict[str, dict[str, Any]]
    runs: dict[str, dict[str, Any]]
    history: dict[int, dict[str, Any]]
    cleanups: dict[str, dict[str, Any]]
    scopes: dict[tuple[str, str], dict[str, Any]]


def snapshot(store: InventoryStore) -> Snapshot:
    with store.engine.connect() as conn:
        rows = {r["project_key"]: dict(r) for r in conn.execute(sa.select(t.projects)).mappings()}
        runs = {r["run_id"]: dict(r) for r in conn.execute(sa.select(t.run_state)).mappings()}
        history = {r["id"]: dict(r) for r in conn.execute(sa.select(t.removed_projects)).mappings()}
        cleanups = {r["run_id"]: dict(r) for r in conn.execute(sa.select(t.cleanups)).mappings()}
        scopes = {
            (r["run_id"], r["scope_key"]): dict(r)
            for r in conn.execute(sa.select(t.run_scopes)).mappings()
        }
    return Snapshot(rows, runs, history, cleanups, scopes)


ROW_FIELDS = ("project_key", "scope_key", "location", "run_id", "seen_generation")
ROW_FIELDS += ("last_confirmed_run_id", "confirmed_generation", "content_hash")


# ------------------------------------------------------------------------- the state machine


def _policy(guard: str, grace: int) -> CleanupPolicy:
    if guard == "off":
        return CleanupPolicy(
            max_delete_count=None,
            max_delete_fraction=None,
            allow_empty=True,
            missing_runs_before_delete=grace,
        )
    if guard == "default":
        return CleanupPolicy(missing_runs_before_delete=grace)
    if guard == "count1":
        return CleanupPolicy(max_delete_count=1, allow_empty=True, missing_runs_before_delete=grace)
    return CleanupPolicy(  # "share": at most a third of any scope of 3 or more
        max_delete_count=None,
        max_delete_fraction=0.34,
        fraction_min_scope_size=3,
        missing_runs_before_delete=grace,
    )


#: (policy, dry_run) of a cleanup; ``None``: the sensor requests no cleanup this time.
CLEANUPS = [
    (_policy(guard, grace), False)
    for guard in ("off", "default", "count1", "share")
    for grace in (1, 2)
] + [(_policy("off", 1), True), (_policy("default", 1), True)]
SENSOR_CLEANUPS = [*CLEANUPS, None, None]
BATCHES = [(1, False), (2, False), (3, False), (8, False), (2, True)]  # (size, retry a batch)
FAIL_PATHS = ["fail", "fail", "fail_attempt", "fail_fails"]
INTERLEAVED = ("cleanup", "restore", "world", "begin", "reap")
PAIRS = [(scope, name) for scope in SCOPES for name in NAMES]


def _events(step: str, *, run_point: bool) -> list[tuple[str, str | None]]:
    """What may happen at one store call: nothing (mostly), a fault, a crash after the commit,
    and inside an enumeration run also the process vanishing or another actor stepping in."""
    events: list[tuple[str, str | None]] = [("", None)] * (QUIET if run_point else QUIET // 3)
    events += [("fault", needle) for needle in NEEDLES[step] for _ in range(2)]
    if step in CRASHABLE:
        events += [("crash", None)] * 2
    if run_point:
        events += [("abandon", None)] + [("interleave", a) for a in INTERLEAVED]
    return events


class InventoryMachine(RuleBasedStateMachine):
    """Store vs model; ``make_url`` (set per backend) gives a fresh database per example."""

    make_url: Any = None
    drop_url: Any = None
    backend = "?"

    def __init__(self) -> None:
        super().__init__()
        self.url = type(self).make_url()
        self.store = InventoryStore(self.url)
        self.model = Model()
        self.snap = snapshot(self.store)
        self.clock: datetime = utcnow()
        self.stats = STATS.setdefault(self.backend, Counter())
        self.stats["examples"] += 1
        self.step_note = ""  # what the current store call is (for messages)

    def teardown(self) -> None:
        self.store.dispose()
        if type(self).drop_url is not None:
            type(self).drop_url(self.url)

    # ------------------------------------------------------------------ plumbing

    def _expired_now(self) -> datetime:
        """A time at which every heartbeat so far is older than the store's timeout."""
        self.clock = max(utcnow(), self.clock) + self.store.heartbeat_timeout + timedelta(hours=1)
        return self.clock

    def _point(self, data, step: str, *, run_point: bool = True) -> tuple[str, str | None]:
        """Draw what happens at this store call; run an interleaved action right away."""
        kind, arg = data.draw(st.sampled_from(_events(step, run_point=run_point)), label=step)
        if kind == "interleave":
            self._interleave(arg, data)
            return "", None
        if kind == "abandon":
            self.stats["abandoned"] += 1
            self.step_note = f"process vanished before {step}"
        return kind, arg

    def _call(self, step: str, fn, event: tuple[str, str | None]) -> tuple[str, Any]:
        """One store call under ``event``. Returns (``ok``|``rolled_back``|``crashed``, value).

        ``rolled_back``: a statement raised inside the step's transaction; ``crashed``: the step
        committed, then the op raised (its orchestration must still fail the run).
        """
        kind, needle = event
        self.stats["store_calls"] += 1
        self.step_note = f"{step}" + (f" ({kind} {needle or ''})" if kind else "")
        if kind != "fault":
            value = fn()
            if kind == "crash":
                self.stats["faults_after_commit"] += 1
                self.stats[f"fault:{step}:after commit"] += 1
                return "crashed", value
            return "ok", value
        try:
            with fail_on_sql(self.store, needle, InjectedFault) as stopped:
                value = fn()
        except InjectedFault:
            assert stopped, "the injected fault fired without stopping a statement"
            self.stats["faults_sql"] += 1
            self.stats[f"fault:{step}:{needle}"] += 1
            return "rolled_back", None
        self.stats["faults_not_reached"] += 1  # that SQL is not emitted on this path
        return "ok", value

    def _after_rule(self) -> None:
        self.stats["steps"] += 1
        active = [r for r, v in self.snap.runs.items() if v["status"] == "active"]
        expected = [self.model.active.run_id] if self.model.active else []
        assert active == expected, (
            f"I3: runs left active after the step: {active}, expected only abandoned {expected}"
        )

    # ------------------------------------------------------------------ the oracle

    def _check(
        self, *, cleanup: tuple[str, CleanupPolicy] | None = None, agree: bool = True
    ) -> None:
        """I1–I6 on the database, then (``agree``) agreement with the model."""
        prev, cur = self.snap, snapshot(self.store)
        self.snap = cur
        m = self.model
        where = f"after {self.step_note}"

        # I4 single writer
        active = [r for r, v in cur.runs.items() if v["status"] == "active"]
        assert len(active) <= 1, f"I4: {len(active)} active runs {where}"
        # I3 truthful status
        for rid, r in cur.runs.items():
            assert r["status"] in ("active", "completed", "failed"), f"I3: {rid} is {r['status']}"
            if r["status"] == "completed":
                assert r["flush_succeeded"], f"I3: {rid} completed without a verified flush"
            if r["status"] == "failed":
                assert not r["flush_succeeded"], (
                    f"I3: run {rid} is failed with flush_succeeded=True ({r['error']}) {where}: "
                    "completed iff flush_succeeded is violated"
                )
        # I6 history is append-only; only restored_at/by may be filled in, once
        for hid, h in prev.history.items():
            now = cur.history.get(hid)
            assert now is not None, f"I6: history entry {hid} vanished {where}"
            for f in ("project_key", "removed_by_run_id", "row", "removed_at"):
                assert now[f] == h[f], f"I6: history entry {hid} changed {f} {where}"
            if h["restored_at"] is not None:
                assert now["restored_at"] == h["restored_at"], f"I6: re-restored {hid}"
        new_hist = {hid: h for hid, h in cur.history.items() if hid not in prev.history}
        assert cleanup is not None or not new_hist, f"I6: history grew outside a cleanup {where}"

        # I1 no loss / I5 ordering / I6 audit, for every row that disappeared
        gone = sorted(prev.rows.keys() - cur.rows.keys())
        problems = []
        if gone and cleanup is None:
            problems.append(f"rows {gone} disappeared outside a cleanup")
        elif gone:
            problems += self._removal_problems(prev, cur, gone, new_hist, *cleanup)
        if problems:
            self.stats["lost"] += len(gone)
            raise AssertionError(f"I1/I5/I6: {where}: " + "; ".join(problems))
        for hid, h in new_hist.items():
            assert h["project_key"] in gone, f"I6: history {hid} for a row still present"

        # rows appear only from a flush (what the run staged) or a restore (from history)
        for k in cur.rows.keys() - prev.rows.keys():
            assert k in m.rows, f"a row appeared that the model did not expect: {k} {where}"

        # I2 completeness: every completed run's rows are present and confirmed by it or a newer
        # run, unless a newer run's cleanup removed them since
        latest_removal: dict[str, int] = {}
        for h in sorted(cur.history.values(), key=lambda h: h["id"]):
            latest_removal[h["project_key"]] = cur.runs[h["removed_by_run_id"]]["generation"]
        for rid, r in cur.runs.items():
            if r["status"] != "completed":
                continue
            for k in m.runs[rid].staged:
                if latest_removal.get(k, -1) > r["generation"]:
                    continue  # removed since by a newer run's cleanup (I1 vouched for it)
                row = cur.rows.get(k)
                assert row is not None, f"I2: {k}, seen by completed run {rid}, is missing {where}"
                assert (row["confirmed_generation"] or 0) >= r["generation"], (
                    f"I2: {k} confirmed by generation {row['confirmed_generation']}, but "
                    f"completed run {rid} (generation {r['generation']}) saw it {where}"
                )
        for k, row in cur.rows.items():
            if row["last_confirmed_run_id"] is not None:
                assert (
                    cur.runs[row["last_confirmed_run_id"]]["generation"]
                    == row["confirmed_generation"]
                ), f"I2: {k} confirmation fields disagree {where}"

        if agree:
            self._agree(cur, where)

    def _removal_problems(self, prev, cur, gone, new_hist, run_id, policy) -> list[str]:
        m = self.model
        problems = []
        run = prev.runs.get(run_id)
        if run is None or run["status"] != "completed" or not run["flush_succeeded"]:
            return [f"cleanup of {run_id} ({run and run['status']}) removed {gone}"]
        gen = run["generation"]
        newer = [r for r, v in cur.runs.items() if v["generation"] > gen]
        by_key = {h["project_key"]: h for h in new_hist.values()}
        per_scope = Counter(prev.rows[k]["scope_key"] for k in gone)
        record = cur.cleanups.get(run_id) or {}
        approved = record.get("approved_max") is not None and len(gone) <= record["approved_max"]
        for scope, n in per_scope.items():
            size = sum(1 for r in prev.rows.values() if r["scope_key"] == scope)
            reason = policy.guard(scope, n, size)
            if reason and not approved:
                problems.append(f"removed despite the deletion guard: {reason}")
        for k in gone:
            row = prev.rows[k]
            verdict = cur.scopes.get((run_id, row["scope_key"]))
            if verdict is None or not verdict["complete"]:
                problems.append(f"{k}: its scope was not read completely by {run_id}")
            elif any(_under(row["location"], p) for p in verdict["protected"] or []):
                problems.append(f"{k}: under a protected sub-scope of {run_id}")
            if k in m.runs[run_id].staged:
                problems.append(f"{k}: run {run_id} saw it")
            if row["seen_generation"] is None or row["seen_generation"] >= gen:
                problems.append(f"{k}: seen_generation {row['seen_generation']} >= {gen}")
            if m.max_flushed_gen.get(k, 0) >= gen:
                problems.append(
                    f"I5: {k} was seen by generation {m.max_flushed_gen[k]}, at or after the "
                    f"cleaning run's {gen} (newer runs: {len(newer)})"
                )
            elif STAGED_IS_SEEN and m.max_staged_gen.get(k, 0) > gen:
                newer_run = max((r for r in m.runs.values() if k in r.staged), key=lambda r: r.gen)
                problems.append(
                    f"I1/I5: {k} was seen by the scan of newer run {newer_run.run_id} "
                    f"(generation {newer_run.gen}, {newer_run.status}, staged but not flushed), "
                    f"yet the cleanup of generation {gen} removed it"
                )
            if row["missed_runs"] + 1 < policy.missing_runs_before_delete:
                problems.append(f"{k}: missed {row['missed_runs'] + 1} runs, grace not over")
            h = by_key.get(k)
            if h is None or h["removed_by_run_id"] != run_id:
                problems.append(f"I6: {k} removed without a history entry of {run_id}")
                continue
            for f in ROW_FIELDS:
                if h["row"].get(f) != row[f]:
                    problems.append(f"I6: history of {k} has {f}={h['row'].get(f)!r}")
        return problems

    def _agree(self, cur: Snapshot, where: str) -> None:
        """The database holds exactly what the model predicts."""
        m = self.model
        assert set(cur.rows) == set(m.rows), (
            f"model disagrees {where}: only in db {sorted(set(cur.rows) - set(m.rows))}, "
            f"only in model {sorted(set(m.rows) - set(cur.rows))}"
        )
        for k, row in cur.rows.items():
            mr = m.rows[k]
            got = (row["seen_generation"], row["confirmed_generation"], row["missed_runs"])
            assert got == (mr.seen_gen, mr.confirmed_gen, mr.missed), (
                f"model disagrees on {k} {where}: db {got}, model "
                f"{(mr.seen_gen, mr.confirmed_gen, mr.missed)}"
            )
        runs = {r: v["status"] for r, v in cur.runs.items()}
        assert runs == {r: v.status for r, v in m.runs.items()}, f"run statuses differ {where}"
        cleanups = {r: v["status"] for r, v in cur.cleanups.items()}
        assert cleanups == {r: v.status for r, v in m.cleanups.items()}, f"cleanups {where}"
        hist = [
            (h["project_key"], h["removed_by_run_id"], h["restored_at"] is not None)
            for _, h in sorted(cur.history.items())
        ]
        assert hist == [(h.key, h.run_id, h.restored) for h in m.history], f"history {where}"

    # ------------------------------------------------------------------ orchestration

    def _fail_path(self, run: MRun, reason: str, data) -> None:
        """What the Dagster steps do when one raised: mark the run failed."""
        how = data.draw(st.sampled_from(FAIL_PATHS), label="failure path")
        self.step_note = f"failure path ({how}) after {reason}"
        if how == "fail":
            self.store.fail(run.run_id, f"injected: {reason}")
            self.model.fail(run)
        elif how == "fail_attempt":
            self.store.fail_attempt(run.attempt, f"dagster run failed: {reason}")
            self.model.fail(run)
        else:  # the failure path itself cannot reach the database: the run is abandoned
            self.stats["abandoned"] += 1
        self._check()

    def _interleave(self, action: str, data) -> None:
        """Something else happening while a run is active."""
        self.stats[f"interleaved_{action}"] += 1
        if action == "cleanup":
            self._any_cleanup(data)
        elif action == "restore":
            self._any_restore(data)
        elif action == "world":
            self._change_world(data)
        elif action == "begin":
            self._begin_refused()
        else:
            self.step_note = "reap (fresh heartbeat)"
            assert self.store.reap() == []
            self._check()

    def _end_session(self, run: MRun) -> None:
        """The abandoned run's process died on another host: only its lease can tell."""
        self.step_note = f"the database session of abandoned run {run.run_id} ends"
        holders = lease_holders(self.store, run.run_id)
        assert holders, f"I4: active run {run.run_id} holds no lease"
        terminate_backends(self.store, holders)
        run.session_gone = True
        self.stats["lease_takeovers"] += 1

    def _begin_refused(self) -> None:
        self.stats["begin_refused"] += 1
        self.step_note = "second begin while a run is active"
        with pytest.raises(RunActiveError):
            self.store.begin(_run_id())
        self._check()

    def _finish(self, run: MRun, data) -> None:
        """flush → verify → complete (each may fail or crash), then maybe the cleanup."""
        m = self.model
        event = self._point(data, "flush")
        if event[0] == "abandon":
            return
        lost = self._maybe_lose_write(run, data)
        try:
            outcome, _ = self._call("flush", lambda: self.store.flush(run.run_id), event)
        finally:
            if lost:
                clear_faults(self.url)
        if outcome != "rolled_back":
            m.flush(run)
            for k in lost:  # the database dropped the inserted row
                m.rows.pop(k, None)
        self._check()
        if outcome != "ok":
            self._fail_path(run, f"flush {outcome}", data)
            return
        if lost:
            # verify_flush: the proof fails, the op marks the run failed and reports
            # flush_succeeded=False; run_state's complete then says failed
            self.step_note = f"verify after the database lost {lost}"
            with pytest.raises(FlushVerificationError):
                self.store.verify_and_confirm(run.run_id)
            self.stats["lost_writes_caught"] += 1
            self._check()
            self.store.fail(run.run_id, "flush verification failed")
            m.fail(run)
            assert self.store.complete(run.run_id) == "failed"
            self._check()
            return
        for step, call, update in (
            ("verify", lambda: self.store.verify_and_confirm(run.run_id), m.verify),
            ("complete", lambda: self.store.complete(run.run_id), m.complete),
        ):
            event = self._point(data, step)
            if event[0] == "abandon":
                return
            outcome, value = self._call(step, call, event)
            if outcome != "rolled_back":
                expected = update(run)
                if step == "complete":
                    assert value == expected == "completed", f"complete: {value} vs {expected}"
            self._check()
            if outcome != "ok":
                self._fail_path(run, f"{step} {outcome}", data)
                return
        self.stats["runs_completed"] += 1
        self.step_note = "prune_staging after the run completed (the run_state asset)"
        self.store.prune_staging(keep_runs=2)
        m.prune_staging(2)
        self.stats["prunes"] += 1
        self._check()
        choice = data.draw(st.sampled_from(SENSOR_CLEANUPS), label="sensor cleanup")
        if choice is not None:
            self._cleanup(run.run_id, *choice, data)

    def _maybe_lose_write(self, run: MRun, data) -> list[str]:
        """Maybe make the database silently drop the insert of new projects (a trigger)."""
        new = sorted(k for k in run.staged if k not in self.model.rows)
        victim = data.draw(st.sampled_from([None] * 12 + new[:1]), label="lose write")
        if victim is None:
            return []
        name = victim.rsplit("/", 1)[-1]
        install_fault(self.url, "lose_write", name)
        return [k for k in new if k.rsplit("/", 1)[-1] == name]

    # ------------------------------------------------------------------ cleanup & restore

    def _cleanup(
        self, run_id: str, policy: CleanupPolicy, dry_run: bool, data, *, approved_by=None
    ) -> None:
        m = self.model
        plan = m.plan_cleanup(run_id, policy, dry_run)
        self.stats["cleanups"] += 1

        def call():
            return self.store.safe_cleanup_old_projects(
                run_id, policy, dry_run=dry_run, approved_by=approved_by
            )

        if plan.refused:
            self.step_note = f"cleanup of {m.runs[run_id].status} run"
            with pytest.raises(CleanupRefusedError):
                call()
            self.stats["cleanups_refused"] += 1
            self._check()
            return
        event = self._point(data, "cleanup", run_point=False)
        if plan.status == "done" and plan.removed and not event[0]:
            # a cleanup that removes rows: fault its writes more often, and retry it afterwards
            # (the sensor or the operator runs it again), so removals still happen
            faults = [e for e in _events("cleanup", run_point=False) if e[0] == "fault"]
            event = data.draw(st.sampled_from([event] * 6 + faults), label="cleanup fault")
        outcome, result = self._call("cleanup", call, event)
        if outcome == "rolled_back" and plan.status == "done":
            self._check(cleanup=(run_id, policy))
            self.stats["cleanup_retries"] += 1
            outcome, result = self._call("cleanup", call, ("", None))
        self._check(cleanup=(run_id, policy), agree=False)  # the invariants come first
        if outcome == "ok":
            done = "already_" if result.already_done else ""
            self.stats[f"cleanup_{'dry_' if dry_run else ''}{done}{result.status}"] += 1
            self.stats["removed_rows"] += 0 if dry_run else len(result.removed_keys)
            assert (result.status, result.already_done) == (plan.status, plan.already_done), (
                f"cleanup of {run_id}: store {result.status} (already {result.already_done}, "
                f"{result.reason}, candidates {result.candidates}), model {plan.status} (already "
                f"{plan.already_done}, candidates {plan.candidates}; a row a newer run staged is "
                "no candidate)"
            )
            if not dry_run and not plan.already_done:
                assert sorted(result.removed_keys) == sorted(plan.removed)
                m.apply_cleanup(run_id, plan)
        self._agree(self.snap, f"after {self.step_note}")

    def _any_cleanup(self, data) -> None:
        """A cleanup of any run: late (an older completed run), a re-run, or a refused one."""
        m = self.model
        if m.order:
            completed = [r for r in m.order if m.runs[r].status == "completed"]
            uncleaned = [r for r in completed if r not in m.cleanups]
            choices = uncleaned * 3 + completed + m.order
            run_id = data.draw(st.sampled_from(choices), label="cleanup of run")
            self._cleanup(run_id, *data.draw(st.sampled_from(CLEANUPS), label="policy"), data)

    def _any_restore(self, data) -> None:
        cleaned = sorted(self.model.cleanups)
        if not cleaned:
            return
        run_id = data.draw(st.sampled_from(cleaned), label="restore of")
        m = self.model
        before = self.snap
        event = self._point(data, "restore", run_point=False)
        outcome, restored = self._call("restore", lambda: self.store.restore(run_id), event)
        self.stats["restores"] += 1
        if outcome != "ok":
            self._check()
            return
        entries = {
            h["project_key"]: h
            for _, h in sorted(before.history.items())
            if h["removed_by_run_id"] == run_id and h["restored_at"] is None
        }
        expected = m.restore(run_id)
        assert sorted(restored) == sorted(expected), f"restore: {restored} vs {expected}"
        self.stats["restored_rows"] += len(restored)
        self._check()
        for k in restored:  # I6: it is back exactly as it was removed
            row = self.snap.rows[k]
            for f in ROW_FIELDS:
                assert entries[k]["row"][f] == row[f], f"I6: restored {k} differs in {f}"

    # ------------------------------------------------------------------ rules

    @initialize(data=st.data())
    def populate_world(self, data) -> None:
        rnd = data.draw(st.randoms(use_true_random=True), label="world")
        for scope in SCOPES:
            self.model.world[scope] = {n for n in NAMES if rnd.random() < 0.6}

    @rule(data=st.data())
    def change_world(self, data) -> None:
        """Projects appear, disappear, return."""
        self._change_world(data)
        self._after_rule()

    def _change_world(self, data) -> None:
        # a seeded RNG, not hypothesis draws: they would keep toggling the simplest project
        rnd = data.draw(st.randoms(use_true_random=True), label="world change")
        for scope, name in rnd.sample(PAIRS, rnd.randint(1, 4)):
            self.model.world[scope] ^= {name}
        if rnd.random() < 0.05:  # another filesystem gets mounted at a root (or unmounted)
            scope = rnd.choice(SCOPES)
            self.model.device[scope] = 3 - self.model.device[scope]
            self.stats["remounts"] += 1
        self.stats["world_changes"] += 1

    @rule(data=st.data())
    def enumeration_run(self, data) -> None:
        """One run of ``enumerate_projects`` as its steps do it."""
        self._enumeration_run(data)

    @rule(data=st.data())
    def world_changes_then_enumeration_run(self, data) -> None:
        """The usual life: projects came and went since the last run."""
        self._change_world(data)
        self._enumeration_run(data)

    def _enumeration_run(self, data) -> None:
        m = self.model
        run_id = _run_id()
        now = None
        if m.active is not None:  # an abandoned run still holds the inventory
            if not m.active.session_gone and data.draw(
                st.booleans(), label="begin before the heartbeat expired"
            ):
                self._begin_refused()
            if not m.active.session_gone and (
                self.backend == "postgresql" and data.draw(st.booleans(), label="session ends")
            ):
                self._end_session(m.active)
            if not m.active.session_gone:
                now = self._expired_now()
            self.stats["takeovers"] += 1
        event = self._point(data, "begin", run_point=False)
        outcome, _ = self._call("begin", lambda: self.store.begin(run_id, now=now), event)
        if outcome == "rolled_back":
            self._check()
            self._after_rule()
            return
        run = m.begin(run_id, run_id)
        self.stats["runs"] += 1
        self._check()
        if outcome == "crashed":
            self._fail_path(run, "begin crashed", data)
        elif self._scan(run, data):
            self._finish(run, data)
        self._after_rule()

    def _scan(self, run: MRun, data) -> bool:
        """Stage every scope in batches and end it with a verdict. False when the run stopped."""
        m = self.model
        order = data.draw(st.sampled_from(list(permutations(SCOPES))), label="scope order")
        for scope in order:
            kind = data.draw(st.sampled_from(VERDICTS), label=f"verdict {scope}")
            self.stats[f"verdict_{kind}"] += 1
            if kind == "absent":
                continue
            names = sorted(m.world[scope])
            if kind == "complete":
                seen = names
            elif kind == "protected":
                seen = [n for n in names if not n.startswith("locked/")]
            elif kind == "incomplete":
                seen = []
            else:
                mask = data.draw(st.integers(0, 2 ** len(names) - 1), label="partial read")
                seen = [n for i, n in enumerate(names) if mask >> i & 1]
            size, retry = data.draw(st.sampled_from(BATCHES), label="batches")
            for start in range(0, len(seen), size):
                batch = seen[start : start + size]
                if retry and start:
                    batch = batch + seen[:1]  # a retried batch overlaps an earlier one
                event = self._point(data, "stage")
                if event[0] == "abandon":
                    return False
                outcome, _ = self._call(
                    "stage",
                    lambda b=batch, s=scope: self.store.stage(run.run_id, [rec(n, s) for n in b]),
                    event,
                )
                if outcome != "rolled_back":
                    m.stage(run, [(scope, n) for n in batch])
                self._check()
                if outcome != "ok":
                    self._fail_path(run, f"stage {outcome}", data)
                    return False
            complete = kind in ("complete", "protected")
            verdict = ScopeVerdict(
                scope_key=scope,
                source_kind="filesystem",
                complete=complete,
                seen=len(seen),
                reason=None if complete else f"injected: {kind} read",
                protected=(f"{_root(scope)}/locked",) if kind == "protected" else (),
                identity={"st_dev": m.device[scope]},
            )
            event = self._point(data, "end_scope")
            if event[0] == "abandon":
                return False
            outcome, _ = self._call(
                "end_scope", lambda v=verdict: self.store.end_scope(run.run_id, v), event
            )
            if outcome != "rolled_back":
                run.verdicts[scope] = (complete, verdict.protected, verdict.identity["st_dev"])
            self._check()
            if outcome != "ok":
                self._fail_path(run, f"end_scope {outcome}", data)
                return False
        return True

    @precondition(lambda self: any(r.status == "failed" for r in self.model.runs.values()))
    @rule(data=st.data())
    def reexecute_from_failure(self, data) -> None:
        """Dagster re-execution: resume a failed run from its staging, then flush again."""
        m = self.model
        failed = [r for r in m.order if m.runs[r].status == "failed"]
        run = m.runs[data.draw(st.sampled_from(failed), label="resume")]
        attempt = _run_id()
        allowed = m.active is None and run.gen == m.last_gen
        self.stats["resumes"] += 1
        if not allowed:
            self.step_note = "resume that must be refused"
            with pytest.raises(StoreError):
                self.store.resume(run.run_id, attempt)
            self._check()
            self._after_rule()
            return
        event = self._point(data, "resume", run_point=False)
        outcome, _ = self._call("resume", lambda: self.store.resume(run.run_id, attempt), event)
        if outcome != "rolled_back":
            run.status, run.attempt, run.session_gone = "active", attempt, False
        self._check()
        if outcome == "crashed":
            self._fail_path(run, "resume crashed", data)
        elif outcome == "ok":
            self.stats["resumed"] += 1
            self._finish(run, data)
        self._after_rule()

    @precondition(lambda self: bool(self.model.order))
    @rule(data=st.data())
    def late_cleanup(self, data) -> None:
        """The cleanup of any run, possibly long after newer runs (or a repeat: idempotency)."""
        self._any_cleanup(data)
        self._after_rule()

    @precondition(
        lambda self: any(c.status in ("done", "noop") for c in self.model.cleanups.values())
    )
    @rule(data=st.data())
    def rerun_cleanup(self, data) -> None:
        """Running a finished cleanup again changes nothing."""
        done = sorted(r for r, c in self.model.cleanups.items() if c.status in ("done", "noop"))
        run_id = data.draw(st.sampled_from(done), label="rerun cleanup of")
        before = self.snap
        self._cleanup(run_id, *data.draw(st.sampled_from(CLEANUPS), label="policy"), data)
        assert (self.snap.rows, self.snap.history) == (before.rows, before.history), (
            "a repeated cleanup changed the inventory"
        )
        self.stats["cleanup_reruns"] += 1
        self._after_rule()

    @precondition(lambda self: any(c.status == "blocked" for c in self.model.cleanups.values()))
    @rule(data=st.data())
    def approve_blocked_cleanup(self, data) -> None:
        """An operator approves a cleanup the guard held back, then it runs again."""
        m = self.model
        blocked = sorted(r for r, c in m.cleanups.items() if c.status == "blocked")
        run_id = data.draw(st.sampled_from(blocked), label="approve")
        # approvals are rare: fault one in three of them
        event = data.draw(st.sampled_from([("", None)] * 4 + [("fault", "UPDATE cleanups")] * 2))
        outcome, _ = self._call(
            "approve", lambda: self.store.approve_cleanup(run_id, "model"), event
        )
        if outcome == "ok":
            m.cleanups[run_id].approved_max = m.cleanups[run_id].candidates
            self.stats["approvals"] += 1
        self._check()
        policy, dry_run = data.draw(st.sampled_from(CLEANUPS), label="policy")
        self._cleanup(run_id, policy, dry_run, data, approved_by="model")
        self._after_rule()

    @precondition(lambda self: bool(self.model.cleanups))
    @rule(data=st.data())
    def restore_cleanup(self, data) -> None:
        """An operator restores what a past cleanup removed."""
        self._any_restore(data)
        self._after_rule()

    @precondition(lambda self: self.model.active is not None)
    @rule(data=st.data())
    def reap_abandoned(self, data) -> None:
        """The reaper sensor: a fresh heartbeat is left alone unless the run's database session
        is gone (PostgreSQL), an expired one is failed."""
        m = self.model
        if m.active.session_gone:
            self.step_note = "reap a run whose session is gone (fresh heartbeat)"
            assert self.store.reap() == [m.active.run_id]
            m.fail(m.active)
        elif data.draw(st.booleans(), label="heartbeat expired"):
            self.step_note = "reap with an expired heartbeat"
            assert self.store.reap(now=self._expired_now()) == [m.active.run_id]
            m.fail(m.active)
        else:
            self.step_note = "reap with a fresh heartbeat"
            assert self.store.reap() == []
        self._check()
        self._after_rule()


# ------------------------------------------------------------------------------- the tests


EXAMPLES = int(os.environ.get("ENUM_PIPELINE_MODEL_EXAMPLES", "80"))
STEPS = int(os.environ.get("ENUM_PIPELINE_MODEL_STEPS", "25"))


def _settings() -> settings:
    settings.register_profile(
        "enum_pipeline_model",
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    return settings.get_profile("enum_pipeline_model")


def _pg_schema_factory(pg_database):
    admin = sa.create_engine(pg_database)

    def make() -> str:
        schema = f"m_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = pg_database.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(url: str) -> None:
        schema = sa.engine.make_url(url).query["options"].split("=", 1)[1]
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    return make, drop, admin


@pytest.mark.timeout(max(1800, EXAMPLES * 20))  # shrinking a failure may take minutes
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_matches_the_model_and_keeps_every_invariant(backend, request, tmp_path):
    STATS[backend] = Counter()
    attrs: dict[str, Any] = {"backend": backend}
    admin = None
    if backend == "sqlite":
        counter = iter(range(10**9))
        attrs["make_url"] = staticmethod(
            lambda: f"sqlite:///{tmp_path / f'model_{next(counter)}.sqlite'}"
        )
    else:
        make, drop, admin = _pg_schema_factory(request.getfixturevalue("pg_database"))
        attrs["make_url"], attrs["drop_url"] = staticmethod(make), staticmethod(drop)
    machine = type(f"InventoryMachine_{backend}", (InventoryMachine,), attrs)
    try:
        run_state_machine_as_test(machine, settings=_settings())
    finally:
        if admin is not None:
            admin.dispose()
        print(_summary(backend, STATS[backend]))


@pytest.mark.parametrize("newer_run", ["still scanning", "died before its flush"])
def test_late_cleanup_keeps_a_project_that_a_newer_run_has_scanned(store, newer_run):
    """The model's I1/I5 finding, pinned: an older run that did not see ``b`` completes, ``b``
    comes back and a newer run's scan stages it; the older run's late cleanup must keep ``b``
    (a newer run has seen it), whether the newer run is still going or died before flushing."""
    run_once(store, {SCOPE: ["a", "b"]})
    older, _ = run_once(store, {SCOPE: ["a"]}, cleanup=False)
    newer = new_run_id()
    store.begin(newer)
    store.stage(newer, [rec("a"), rec("b")])
    store.end_scope(newer, ScopeVerdict(SCOPE, "filesystem", True, 2))
    if newer_run == "died before its flush":
        store.fail(newer, "killed before its flush")
    result = store.safe_cleanup_old_projects(older)
    assert key("b") in store.project_keys(), (
        f"the late cleanup of {older} removed {result.removed_keys}, which newer run {newer} "
        "had already scanned"
    )
    assert store.history() == []


def _summary(backend: str, s: Counter) -> str:
    faults = s["faults_sql"] + s["faults_after_commit"] + s["lost_writes_caught"]
    repeated = s["cleanup_already_done"] + s["cleanup_already_noop"]
    dry = sum(v for k, v in s.items() if k.startswith("cleanup_dry_"))
    points = ", ".join(f"{k[6:]}={v}" for k, v in sorted(s.items()) if k.startswith("fault:"))
    return (
        f"\nMODEL: backend={backend} examples={s['examples']} steps={s['steps']} "
        f"store_calls={s['store_calls']} faults={faults} lost={s['lost']}\n"
        f"  faults: sql={s['faults_sql']} after_commit={s['faults_after_commit']} "
        f"lost_write={s['lost_writes_caught']} (armed but SQL not on the path: "
        f"{s['faults_not_reached']}); abandoned={s['abandoned']} takeovers={s['takeovers']} "
        f"(lease freed: {s['lease_takeovers']})\n"
        f"  runs={s['runs']} completed={s['runs_completed']} resumed={s['resumed']} "
        f"cleanups={s['cleanups']}: done={s['cleanup_done']} blocked={s['cleanup_blocked']} "
        f"noop={s['cleanup_noop']} repeated={repeated} dry={dry} "
        f"refused={s['cleanups_refused']} approvals={s['approvals']} "
        f"removed_rows={s['removed_rows']} restores={s['restores']} "
        f"restored_rows={s['restored_rows']} "
        f"remounts={s['remounts']} prunes={s['prunes']} cleanup_retries={s['cleanup_retries']}\n"
        f"  faults by step: {points}"
    )
