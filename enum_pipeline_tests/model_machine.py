"""The state machine of the model-based test: the real store and the model, step by step.

``InventoryMachine`` runs whole enumeration runs the way the Dagster steps do, with faults,
crashes, lost writes, abandoned runs, late cleanups, approvals, restores and acceptances in
between (see ``test_model_based.py``), and after every store call checks the database against
invariants I1–I8 and I10 of DESIGN.md, one function each (``model_invariants.py``:
``i1_no_loss`` … ``i10_confirmed_absence``), then against the model's prediction (``agree``);
I9 (``i9_live_run_not_taken_over``, ``i9_live_run_not_reaped``) is checked where a begin or a
reap meets a run with a fresh heartbeat.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from itertools import combinations, permutations
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

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
from enum_pipeline_tests.helpers import (
    clear_faults,
    fail_on_sql,
    install_fault,
    lease_holders,
    rec,
    terminate_backends,
)
from enum_pipeline_tests.helpers import verdict as make_verdict
from enum_pipeline_tests.model_invariants import (
    ROW_FIELDS,
    Snapshot,
    cleaning_run,
    i1_no_loss,
    i2_completeness,
    i3_truthful_status,
    i4_single_writer,
    i5_ordering,
    i6_history_append_only,
    i6_history_only_of_removed_rows,
    i6_removals_recorded,
    i7_coverage,
    i8_bound_policy,
    i9_live_run_not_reaped,
    i9_live_run_not_taken_over,
    i10_confirmed_absence,
    next_run_id,
    rows_appear_only_as_the_model_expects,
    snapshot,
)
from enum_pipeline_tests.model_oracle import (
    NAMES,
    SCOPES,
    Model,
    MRun,
    overlap,
    root,
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
#: The scope sets a run may claim: the whole inventory (None), one scope, or two.
SCOPE_SETS = [None, *((scope,) for scope in SCOPES), *combinations(SCOPES, 2)]


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
        active = sorted(r for r, v in self.snap.runs.items() if v["status"] == "active")
        expected = sorted(r.run_id for r in self.model.actives)
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
        run = cleaning_run(prev, cleanup)
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
        for run in self.model.actives:  # those it found gone stay abandoned though it refused
            if run.session_gone:
                self.model.fail(run)
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
        now = None
        held = m.actives
        if held:  # abandoned runs still hold their scopes
            if any(not r.session_gone for r in held) and data.draw(
                st.booleans(), label="begin before the heartbeat expired"
            ):
                self._begin_refused()
            for r in m.actives:
                if not r.session_gone and (
                    self.backend == "postgresql" and data.draw(st.booleans(), label="session ends")
                ):
                    self._end_session(r)
            if any(not r.session_gone for r in m.actives):
                now = self._expired_now()
            self.stats["takeovers"] += 1
        run = self._begin_run(data, None, now)
        if run is not None and self._scan(run, data):
            self._finish(run, data)
        self._after_rule()

    def _begin_run(self, data, scopes: tuple[str, ...] | None, now=None) -> MRun | None:
        """Begin a run over ``scopes`` (None: the whole inventory) under a drawn policy and
        event; the run, or None when the begin rolled back or crashed."""
        m = self.model
        run_id = next_run_id()
        policy = data.draw(st.sampled_from(POLICIES), label="policy at begin")
        claimed = list(scopes) if scopes is not None else None
        event = self._point(data, "begin", run_point=False)
        outcome, _ = self._call(
            "begin",
            lambda: self.store.begin(run_id, now=now, policy=policy, scopes=claimed),
            event,
        )
        if outcome == "rolled_back":
            self._check()
            return None
        run = m.begin(run_id, run_id, policy, scopes)
        self.stats["runs"] += 1
        self._check()
        if outcome == "crashed":
            self._fail_path(run, "begin crashed", data)
            return None
        return run

    @precondition(lambda self: self.model.active is None)
    @rule(data=st.data())
    def concurrent_runs(self, data) -> None:
        """Two runs whose lives overlap, each over a set of scopes (one, two or the whole
        inventory), with every fault of a run: the second is refused while the first is active
        over a common scope; otherwise both scan, then flush, verify, complete (and maybe clean
        up) in either order."""
        m = self.model
        if data.draw(st.booleans(), label="world changes first"):
            self._change_world(data)
        first_scopes = data.draw(st.sampled_from(SCOPE_SETS), label="first")
        first = self._begin_run(data, first_scopes)
        scanned = {first.run_id: self._scan(first, data)} if first is not None else {}
        disjoint = [s for s in SCOPE_SETS if not overlap(s, first_scopes)]
        scopes = data.draw(st.sampled_from(disjoint * 3 + SCOPE_SETS), label="second")
        holder = next((r for r in m.actives if overlap(r.scopes, scopes)), None)
        second = None
        if holder is not None:
            self.stats["scope_refused"] += 1
            self.step_note = f"begin over {scopes} while {holder.run_id} reads {holder.scopes}"
            claimed = list(scopes) if scopes is not None else None
            with pytest.raises(RunActiveError, match=f"is being read by run {holder.run_id}"):
                self.store.begin(next_run_id(), scopes=claimed)
            self._check()
        else:
            if m.actives:
                self.stats["concurrent_runs"] += 1
            second = self._begin_run(data, scopes)
            if second is not None:
                scanned[second.run_id] = self._scan(second, data)
        order = [r for r in (first, second) if r is not None and scanned.get(r.run_id)]
        if len(order) == 2 and data.draw(st.booleans(), label="newer finishes first"):
            order.reverse()
        for run in order:
            if run.status == "active":
                self._finish(run, data)
        self._after_rule()

    def _scan(self, run: MRun, data) -> bool:
        """Stage every scope in batches and end it with a verdict. False when the run stopped."""
        m = self.model
        scopes = run.scopes if run.scopes is not None else SCOPES
        order = data.draw(st.sampled_from(list(permutations(scopes))), label="scope order")
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
        attempt = next_run_id()
        allowed = m.may_resume(run)
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
        gone = [r for r in m.actives if r.session_gone]
        if gone:
            self.step_note = "reap runs whose session is gone (fresh heartbeat)"
            assert sorted(self.store.reap()) == sorted(r.run_id for r in gone)
            for r in gone:
                m.fail(r)
        elif data.draw(st.booleans(), label="heartbeat expired"):
            self.step_note = "reap with an expired heartbeat"
            expected = sorted(r.run_id for r in m.actives)
            assert sorted(self.store.reap(now=self._expired_now())) == expected
            for r in m.actives:
                m.fail(r)
        else:
            self.step_note = "reap with a fresh heartbeat"
            i9_live_run_not_reaped(self.store)
        self._check()
        self._after_rule()


# ------------------------------------------------------------------------------- the tests
