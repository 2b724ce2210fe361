"""The state machine of the model-based test: the real store and the model, step by step.

``InventoryMachine`` runs whole enumeration runs the way the Dagster steps do, with faults,
crashes, lost writes, abandoned runs, late cleanups, approvals, restores and acceptances in
between (see ``test_model_based.py``), and after every store call checks the database against
invariants I1–I8 of DESIGN.md, one function each (``i1_no_loss`` … ``i8_bound_policy``), then
against the model's prediction (``agree``); I9 (``i9_live_run_not_taken_over``,
``i9_live_run_not_reaped``) is checked where a begin or a reap meets a run with a fresh heartbeat.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import permutations
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from enum_pipeline.sources.coverage import outside_coverage
from enum_pipeline.sources.witness import Absence, Confirmation
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
    clear_faults,
    fail_on_sql,
    install_fault,
    lease_holders,
    rec,
    terminate_backends,
)
from enum_pipeline_tests.helpers import verdict as make_verdict
from enum_pipeline_tests.model_oracle import (
    NAMES,
    SCOPES,
    STAGED_IS_SEEN,
    Model,
    MRun,
    root,
    under,
)

FULL_COVERAGE = {"max_depth": None, "nested": True, "one_file_system": True}
FULL_COVERAGE["follow_symlinks"] = False

VERDICTS = ("complete", "complete", "complete", "protected", "incomplete", "partial", "absent")

#: SQL that each store step emits (seen with echo); a fault stops the first statement matching.
#: A batch's progress UPDATE (it also locks and checks the run) comes before its rows, in the
#: same transaction; PostgreSQL stages through COPY on the raw psycopg cursor, which SQLAlchemy
#: events do not see, so there only that UPDATE is a staging fault point.
NEEDLES: dict[str, tuple[str, ...]] = {
    "begin": ("UPDATE inventory SET last_generation", "INSERT INTO run_state"),
    "stage": ("INSERT INTO staged_projects", "scanned_count=("),
    "end_scope": ("INSERT INTO run_scopes",),
    "flush": ("INSERT INTO projects", "flushed_count="),
    "verify": ("SET flush_succeeded", "confirmed_count="),
    "complete": ("SET status=",),
    "resume": ("UPDATE run_state SET",),
    "cleanup": (
        "FROM projects",  # the plan's reads, before and after the witness looks
        "SET missing_since",
        "INSERT INTO removed_projects",
        "DELETE FROM projects",
        "removed_count=",
        "INSERT INTO cleanups",
        "UPDATE cleanups",
    ),
    "approve": ("UPDATE cleanups",),
    "accept": ("SET trusted=",),
    "restore": ("INSERT INTO projects", "SET restored_at"),
}
#: Steps of an enumeration run whose op may crash after the store call committed.
CRASHABLE = {"begin", "stage", "end_scope", "flush", "verify", "complete", "resume"}
QUIET = 80  # weight of "nothing happens" at a store call

STATS: dict[str, Counter] = {}


class InjectedFault(RuntimeError):
    """The failure the test injects (never raised by the store itself)."""


_RUN_IDS = iter(range(1, 10**12))


def _run_id() -> str:
    """A run id shaped like a Dagster run id; sequential, so a replayed example draws the same."""
    return f"00000000-0000-4000-8000-{next(_RUN_IDS):012d}"


@dataclass
class Snapshot:
    rows: dict[str, dict[str, Any]]
    runs: dict[str, dict[str, Any]]
    history: dict[int, dict[str, Any]]
    cleanups: dict[str, dict[str, Any]]
    scopes: dict[tuple[str, str], dict[str, Any]]
    entries: dict[tuple[str, str], dict[str, Any]]


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
        entries = {
            (r["run_id"], r["project_key"]): dict(r)
            for r in conn.execute(sa.select(t.cleanup_entries)).mappings()
        }
    return Snapshot(rows, runs, history, cleanups, scopes, entries)


#: How the sources' witness answers in one cleanup: from the world (mostly), or not at all in
#: one of the ways a real witness fails (cannot tell, raises, answers with a stale look).
WITNESS_MODES = ("world",) * 6 + ("unknown", "raises", "stale")
LONG_AGO = datetime(2000, 1, 1, tzinfo=utcnow().tzinfo)


class ModelWitness:
    """The witness of the model's world: a direct look at each candidate, in ``mode``."""

    def __init__(self, model, mode: str) -> None:
        self.model, self.mode = model, mode
        self.gone: set[str] = set()  # what it confirmed gone (checked by I10)

    def confirm(self, candidates):
        if self.mode == "raises":
            raise OSError("the share holding the roots is not answering")
        for c in candidates:
            at = LONG_AGO if self.mode == "stale" else utcnow()
            if self.mode == "unknown":
                yield Confirmation(c.project_key, Absence.UNKNOWN, "cannot tell", at)
            elif c.project_key in self.model.rows and self.model.exists(c.project_key):
                yield Confirmation(c.project_key, Absence.PRESENT, "in the world", at)
            else:
                self.gone.add(c.project_key)
                yield Confirmation(c.project_key, Absence.GONE, "not in the world", at)


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


#: The policy a run begins with (its cleanup applies it, whatever the request passes).
POLICIES = [
    _policy(guard, grace) for guard in ("off", "default", "count1", "share") for grace in (1, 2)
]
#: (a policy the request passes, which must change nothing (I8), dry_run) of a cleanup.
LOOSE = _policy("off", 1)
CLEANUPS = [(LOOSE, False)] * 2 + [(None, False)] * 6 + [(LOOSE, True), (None, True)]
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


# ------------------------------------------------------------------ the invariants, one each


def i1_no_loss(m: Model, prev: Snapshot, cur: Snapshot, gone: list[str], cleanup) -> list[str]:
    """I1: a row goes only in the cleanup of a completed, verified run that read its scope
    completely and trusted it, outside the protected locations, and did not see the row."""
    if cleanup is None:
        return [f"rows {gone} disappeared outside a cleanup"]
    run_id = cleanup[0]
    run = _cleaning_run(prev, cleanup)
    if run is None:
        cleaner = prev.runs.get(run_id)
        return [f"cleanup of {run_id} ({cleaner and cleaner['status']}) removed {gone}"]
    gen = run["generation"]
    problems = []
    for k in gone:
        row = prev.rows[k]
        verdict = cur.scopes.get((run_id, row["scope_key"]))
        if verdict is None or not verdict["complete"]:
            problems.append(f"{k}: its scope was not read completely by {run_id}")
        elif any(under(row["location"], p) for p in verdict["protected"] or []):
            problems.append(f"{k}: under a protected sub-scope of {run_id}")
        elif not verdict["trusted"]:
            problems.append(f"{k}: {run_id}'s reading of its scope is not trusted")
        if k in m.runs[run_id].staged:
            problems.append(f"{k}: run {run_id} saw it")
        if row["seen_generation"] is None or row["seen_generation"] >= gen:
            problems.append(f"{k}: seen_generation {row['seen_generation']} >= {gen}")
    return problems


def _cleaning_run(prev: Snapshot, cleanup) -> dict[str, Any] | None:
    """The ``run_state`` row of the cleanup's run when it may clean up (completed, verified)."""
    run = prev.runs.get(cleanup[0]) if cleanup is not None else None
    if run is None or run["status"] != "completed" or not run["flush_succeeded"]:
        return None
    return run


def i2_completeness(cur: Snapshot, m: Model, where: str) -> None:
    """I2: every completed run's rows are present and confirmed by it or a newer run, unless a
    newer run's cleanup removed them since."""
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
                cur.runs[row["last_confirmed_run_id"]]["generation"] == row["confirmed_generation"]
            ), f"I2: {k} confirmation fields disagree {where}"


def i3_truthful_status(cur: Snapshot, where: str) -> None:
    """I3: ``completed`` iff the flush was verified; a run is active, completed or failed."""
    for rid, r in cur.runs.items():
        assert r["status"] in ("active", "completed", "failed"), f"I3: {rid} is {r['status']}"
        if r["status"] == "completed":
            assert r["flush_succeeded"], f"I3: {rid} completed without a verified flush"
        if r["status"] == "failed":
            assert not r["flush_succeeded"], (
                f"I3: run {rid} is failed with flush_succeeded=True ({r['error']}) {where}: "
                "completed iff flush_succeeded is violated"
            )


def i4_single_writer(cur: Snapshot, where: str) -> None:
    """I4: at most one active run."""
    active = [r for r, v in cur.runs.items() if v["status"] == "active"]
    assert len(active) <= 1, f"I4: {len(active)} active runs {where}"


def i5_ordering(m: Model, cur: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I5: a cleanup never removes what a run at or after its generation flushed, nor (with
    ``STAGED_IS_SEEN``) what a newer run's scan staged."""
    gen = run["generation"]
    newer = [r for r, v in cur.runs.items() if v["generation"] > gen]
    problems = []
    for k in gone:
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
    return problems


def i6_history_append_only(prev: Snapshot, cur: Snapshot, cleanup, where: str) -> dict:
    """I6: history is append-only (only restored_at/by may be filled in, once) and grows only
    in a cleanup. Returns the entries this store call added."""
    for hid, h in prev.history.items():
        now = cur.history.get(hid)
        assert now is not None, f"I6: history entry {hid} vanished {where}"
        for f in ("project_key", "removed_by_run_id", "row", "removed_at"):
            assert now[f] == h[f], f"I6: history entry {hid} changed {f} {where}"
        if h["restored_at"] is not None:
            assert now["restored_at"] == h["restored_at"], f"I6: re-restored {hid}"
    new_hist = {hid: h for hid, h in cur.history.items() if hid not in prev.history}
    assert cleanup is not None or not new_hist, f"I6: history grew outside a cleanup {where}"
    return new_hist


def i6_removals_recorded(
    prev: Snapshot, gone: list[str], new_hist: dict, run: dict[str, Any]
) -> list[str]:
    """I6: every removed row has a history entry of the cleaning run, holding the row."""
    by_key = {h["project_key"]: h for h in new_hist.values()}
    problems = []
    for k in gone:
        row, h = prev.rows[k], by_key.get(k)
        if h is None or h["removed_by_run_id"] != run["run_id"]:
            problems.append(f"I6: {k} removed without a history entry of {run['run_id']}")
            continue
        for f in ROW_FIELDS:
            if h["row"].get(f) != row[f]:
                problems.append(f"I6: history of {k} has {f}={h['row'].get(f)!r}")
    return problems


def i10_confirmed_absence(
    gone: list[str], new_hist: dict, run: dict[str, Any], witness: ModelWitness | None
) -> list[str]:
    """I10: every removal carries a confirmation of absence taken after the read that missed
    it (the run ended), from the witness, which saw it gone from the world."""
    by_key = {h["project_key"]: h for h in new_hist.values()}
    problems = []
    for k in gone:
        h = by_key.get(k)
        if h is None or not h["confirmation"] or h["confirmed_at"] is None:
            problems.append(f"I10: {k} removed without a confirmation of its absence")
        elif run["finished_at"] is None or h["confirmed_at"] <= run["finished_at"]:
            problems.append(f"I10: {k}'s confirmation {h['confirmed_at']} precedes the read's end")
        elif witness is None or k not in witness.gone:
            problems.append(f"I10: {k} removed though its witness did not see it gone")
    return problems


def i6_history_only_of_removed_rows(new_hist: dict, gone: list[str], where: str) -> None:
    """I6: a new history entry is of a row that this store call removed."""
    for hid, h in new_hist.items():
        assert h["project_key"] in gone, f"I6: history {hid} for a row still present"


def i7_coverage(prev: Snapshot, cur: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I7: no row outside the cleaning run's coverage of its scope is removed."""
    problems = []
    for k in gone:
        row = prev.rows[k]
        verdict = cur.scopes.get((run["run_id"], row["scope_key"]))
        if verdict is None:
            continue  # I1 names it
        locations = [
            r["location"] for r in prev.rows.values() if r["scope_key"] == row["scope_key"]
        ]
        coverage = verdict["coverage"] or {}
        if outside_coverage("filesystem", coverage, row, locations) or any(
            f"/{n}/" in row["location"] for n in coverage.get("skip_names") or []
        ):
            problems.append(
                f"I7: {k} lies outside the coverage of {run['run_id']} ({verdict['coverage']})"
            )
    return problems


def i8_bound_policy(prev: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I8: the deletion guard and the grace are those of the policy the run began with,
    whatever the request passed (an approval of the listed plan releases the guard)."""
    gen, run_id = run["generation"], run["run_id"]
    policy = CleanupPolicy.model_validate(run["policy"])
    problems = []
    per_scope = Counter(prev.rows[k]["scope_key"] for k in gone)
    approved = all(prev.entries.get((run_id, k), {}).get("approved") for k in gone)
    for scope, n in per_scope.items():
        size = sum(  # the scope's population before the run
            1
            for r in prev.rows.values()
            if r["scope_key"] == scope and (r["first_seen_generation"] or 0) < gen
        )
        reason = policy.guard(scope, n, size)
        if reason and not approved:
            problems.append(f"removed despite the deletion guard: {reason}")
    for k in gone:
        row = prev.rows[k]
        if row["missed_runs"] + 1 < policy.missing_runs_before_delete:
            problems.append(f"{k}: missed {row['missed_runs'] + 1} runs, grace not over")
    return problems


def i9_live_run_not_taken_over(store: InventoryStore) -> None:
    """I9: while the active run's heartbeat is fresh (its holder not provably gone), a second
    begin is refused."""
    with pytest.raises(RunActiveError):
        store.begin(_run_id())


def i9_live_run_not_reaped(store: InventoryStore) -> None:
    """I9: the reaper leaves a run with a fresh heartbeat (and its lease held) alone."""
    assert store.reap() == []


def rows_appear_only_as_the_model_expects(prev: Snapshot, cur: Snapshot, m: Model, where: str):
    """Rows appear only from a flush (what the run staged) or a restore (from history)."""
    for k in cur.rows.keys() - prev.rows.keys():
        assert k in m.rows, f"a row appeared that the model did not expect: {k} {where}"


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
        self,
        *,
        cleanup: tuple[str, CleanupPolicy] | None = None,
        agree: bool = True,
        witness: ModelWitness | None = None,
    ) -> None:
        """I1–I8 on the database, one function each, then (``agree``) agreement with the
        model. ``cleanup``: the (run, requested policy) of the cleanup this store call was."""
        prev, cur = self.snap, snapshot(self.store)
        self.snap = cur
        m = self.model
        where = f"after {self.step_note}"
        i4_single_writer(cur, where)
        i3_truthful_status(cur, where)
        new_hist = i6_history_append_only(prev, cur, cleanup, where)
        gone = sorted(prev.rows.keys() - cur.rows.keys())
        problems = self._removal_problems(prev, cur, gone, new_hist, cleanup, witness)
        if problems:
            self.stats["lost"] += len(gone)
            raise AssertionError(f"I1/I5/I6: {where}: " + "; ".join(problems))
        i6_history_only_of_removed_rows(new_hist, gone, where)
        rows_appear_only_as_the_model_expects(prev, cur, m, where)
        i2_completeness(cur, m, where)
        if agree:
            self._agree(cur, where)

    def _removal_problems(self, prev, cur, gone, new_hist, cleanup, witness) -> list[str]:
        """I1, I5, I6, I7, I8 and I10 for every row that disappeared in this store call."""
        if not gone:
            return []
        problems = i1_no_loss(self.model, prev, cur, gone, cleanup)
        run = _cleaning_run(prev, cleanup)
        if run is None:
            return problems
        return (
            problems
            + i8_bound_policy(prev, gone, run)
            + i7_coverage(prev, cur, gone, run)
            + i5_ordering(self.model, cur, gone, run)
            + i6_removals_recorded(prev, gone, new_hist, run)
            + i10_confirmed_absence(gone, new_hist, run, witness)
        )

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
            i9_live_run_not_reaped(self.store)
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
        i9_live_run_not_taken_over(self.store)
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
            m.flush(run, lost)
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
        mode = data.draw(st.sampled_from(WITNESS_MODES), label="witness")
        self.stats[f"witness:{mode}"] += 1
        plan = m.plan_cleanup(run_id, dry_run, mode)
        self.stats["cleanups"] += 1
        witness = ModelWitness(m, mode)

        def call():
            return self.store.safe_cleanup_old_projects(
                run_id, policy, dry_run=dry_run, approved_by=approved_by, witness=witness
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
            self._check(cleanup=(run_id, policy), witness=witness)
            self.stats["cleanup_retries"] += 1
            outcome, result = self._call("cleanup", call, ("", None))
        self._check(cleanup=(run_id, policy), agree=False, witness=witness)  # invariants first
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
            if not plan.already_done:
                self.stats["out_of_coverage_kept"] += result.out_of_coverage
                self.stats["held_kept"] += result.held
                removes = sorted(e.project_key for e in result.entries if e.action == "remove")
                assert removes == plan.due, f"plan lists removals {removes}, model {plan.due}"
                expected = len(plan.due) if plan.status == "done" and not dry_run else 0
                assert (result.removed, result.would_remove) == (expected, len(plan.due))
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
        if rnd.random() < 0.25:  # the configuration narrows (skip_names: [vendor]) or widens
            scope = rnd.choice(SCOPES)
            self.model.narrowed[scope] = not self.model.narrowed[scope]
            self.stats["narrowings"] += 1
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
        policy = data.draw(st.sampled_from(POLICIES), label="policy at begin")
        event = self._point(data, "begin", run_point=False)
        outcome, _ = self._call(
            "begin", lambda: self.store.begin(run_id, now=now, policy=policy), event
        )
        if outcome == "rolled_back":
            self._check()
            self._after_rule()
            return
        run = m.begin(run_id, run_id, policy)
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
            narrowed = m.narrowed[scope]
            names = sorted(n for n in m.world[scope] if not (narrowed and n.startswith("vendor/")))
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
            locked = f"{root(scope)}/locked"
            verdict = make_verdict(
                scope,
                complete=complete,
                seen=len(seen),
                reason=None if complete else f"injected: {kind} read",
                protected=(locked,) if kind == "protected" else (),
                protected_reasons={locked: "unreadable"} if kind == "protected" else {},
                identity={"st_dev": m.device[scope], "real_path": root(scope)},
                coverage={**FULL_COVERAGE, "skip_names": ["vendor"] if narrowed else []},
            )
            event = self._point(data, "end_scope")
            if event[0] == "abandon":
                return False
            outcome, _ = self._call(
                "end_scope", lambda v=verdict: self.store.end_scope(run.run_id, v), event
            )
            if outcome != "rolled_back":
                run.verdicts[scope] = (complete, verdict.protected, m.device[scope], narrowed)
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
            m.cleanups[run_id].approved = set(m.cleanups[run_id].planned)
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

    @precondition(
        lambda self: any(
            not r.trusted.get(s, True) and r.verdicts[s][0]
            for r in self.model.runs.values()
            for s in r.trusted
        )
    )
    @rule(data=st.data())
    def accept_identity(self, data) -> None:
        """An operator accepts the changed identity of a held scope (the newest reading, or a
        chosen older one), then the cleanup of that run is requested again."""
        m = self.model
        held = sorted(
            {
                s
                for r in m.runs.values()
                for s, ok in r.trusted.items()
                if not ok and r.verdicts[s][0]
            }
        )
        scope = data.draw(st.sampled_from(held), label="accept scope")
        readings = m.readings(scope)
        chosen = data.draw(st.sampled_from([None, *readings]), label="accept run")
        target = chosen or readings[-1]
        event = data.draw(st.sampled_from([("", None)] * 4 + [("fault", "SET trusted=")]))
        outcome, _ = self._call(
            "accept",
            lambda: self.store.accept_scope_identity(
                scope, chosen.run_id if chosen else None, accepted_by="model"
            ),
            event,
        )
        if outcome == "ok":
            m.accept(scope, target)
            self.stats["acceptances"] += 1
        self._check()
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
            i9_live_run_not_reaped(self.store)
        self._check()
        self._after_rule()


# ------------------------------------------------------------------------------- the tests
