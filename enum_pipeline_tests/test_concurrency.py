"""The store under real concurrency: several OS processes on one database, on both backends.

Children are started with the ``spawn`` context (a fresh interpreter, no inherited connections)
and get the database URL as a string. Races start through a ``multiprocessing.Barrier``; where an
interleaving must be forced, a child pauses inside its own transaction (an SQLAlchemy
``before_cursor_execute`` hook waiting on an ``Event``) and the parent watches
``pg_stat_activity`` until the other child is provably waiting on a lock.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import (
    CleanupRefusedError,
    InventoryStore,
    RunActiveError,
)
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import GONE, SCOPE, key, new_run_id, rec, run_once

CTX = mp.get_context("spawn")
WAIT = 60.0  # longest any barrier, event or queue read may take before the test fails

only_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


# --------------------------------------------------------------------------- helpers


def _app_url(url: str, app: str) -> str:
    """``url`` with a PostgreSQL ``application_name`` (keeps ``options=-csearch_path=…``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    return parsed.update_query_dict({"application_name": app}).render_as_string(hide_password=False)


def _stage_scope(store: InventoryStore, run_id: str, scope: str, names: list[str]) -> None:
    store.stage(run_id, [rec(n, scope) for n in names])
    store.end_scope(run_id, ScopeVerdict(scope, "filesystem", True, len(names)))


def _pause_on(store: InventoryStore, needle: str, paused, release):
    """Stop this process just before the first statement containing ``needle`` runs (inside the
    caller's transaction), tell the parent through ``paused``, go on once ``release`` is set."""
    fired: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if not fired and needle in statement.lower():
            fired.append(statement)
            paused.set()
            if not release.wait(WAIT):
                raise RuntimeError(f"never released while paused before {statement[:60]!r}")

    sa.event.listen(store.engine, "before_cursor_execute", before)
    return before


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


_OPS = {
    "begin": lambda store, run_id: store.begin(run_id),
    "stage_scope": _stage_scope,
    "flush": lambda store, run_id: store.flush(run_id),
    "verify": lambda store, run_id: store.verify_and_confirm(run_id),
    "complete": lambda store, run_id: store.complete(run_id),
    "cleanup": lambda store, run_id: store.safe_cleanup_old_projects(run_id, witness=GONE),
}


def _perform(store: InventoryStore, cmd: dict, gate, paused, release) -> dict:
    hook = _pause_on(store, cmd["pause_before"], paused, release) if "pause_before" in cmd else None
    try:
        if cmd.get("gate"):
            gate.wait(WAIT)
        if cmd.get("delay"):
            time.sleep(cmd["delay"])  # varies the interleaving; never used to synchronise
        out = {op: _plain(_OPS[op](store, *args)) for op, *args in cmd["ops"]}
        return {"who": cmd["who"], "ok": True, **out}
    except Exception as err:  # reported to the parent, which fails the test with it
        return {"who": cmd["who"], "ok": False, "error": f"{type(err).__name__}: {err}"}
    finally:
        if hook is not None:
            sa.event.remove(store.engine, "before_cursor_execute", hook)


def _worker(url: str, commands, results, gate, paused, release) -> None:
    """A long-lived child: runs the store operations it is sent until it gets ``None``."""
    store = InventoryStore(url)
    try:
        while (cmd := commands.get(timeout=WAIT * 2)) is not None:
            results.put(_perform(store, cmd, gate, paused, release))
    finally:
        store.dispose()


class Worker:
    """Parent-side handle of one ``_worker`` process."""

    def __init__(self, url: str, results, gate=None, app: str = "ep_worker"):
        self.app = f"{app}_{uuid.uuid4().hex[:8]}"
        self.commands = CTX.Queue()
        self.paused, self.release = CTX.Event(), CTX.Event()
        self.process = CTX.Process(
            target=_worker,
            args=(_app_url(url, self.app), self.commands, results, gate, self.paused, self.release),
            daemon=True,
        )
        self.process.start()

    def send(self, who: str, ops: list[tuple], **options) -> None:
        self.paused.clear()
        self.release.clear()
        self.commands.put({"who": who, "ops": ops, **options})

    def stop(self) -> None:
        if self.process.is_alive():
            self.release.set()
            self.commands.put(None)
            self.process.join(WAIT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(WAIT)


def _collect(results, n: int) -> dict[str, dict]:
    got = [results.get(timeout=WAIT) for _ in range(n)]
    for r in got:
        assert r["ok"], f"{r['who']} failed: {r['error']}"
    return {r["who"]: r for r in got}


def _wait_for_backend(store: InventoryStore, app: str, query_prefix: str, *, waiting: bool):
    """Poll ``pg_stat_activity`` until the backend of ``app`` runs a statement starting with
    ``query_prefix`` (and, with ``waiting``, is blocked on a lock). Returns its row."""
    sql = sa.text(
        "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
        "WHERE application_name = :app AND state = 'active' AND query ILIKE :q"
    )
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:  # a new transaction: a fresh stats snapshot
            rows = conn.execute(sql, {"app": app, "q": query_prefix + "%"}).mappings().all()
        for row in rows:
            if not waiting or row["wait_event_type"] == "Lock":
                return row
        time.sleep(0.002)
    raise AssertionError(f"backend {app} never ran {query_prefix!r} (waiting={waiting})")


def _assert_lifecycle_invariants(store: InventoryStore) -> None:
    """I3/I4 at rest: nothing active; completed iff verified; generations unique."""
    runs = store.runs(limit=10_000)
    assert [r.run_id for r in runs if r.status == "active"] == []
    for r in runs:
        assert r.status in ("completed", "failed")
        if r.status == "completed":
            assert r.flush_succeeded
    gens = [r.generation for r in runs]
    assert len(gens) == len(set(gens))


# --------------------------------------------------------------------------- a: racing begins


def _begin_worker(url: str, run_ids: list[str], start, done, results) -> None:
    store = InventoryStore(url)
    with store.engine.connect() as conn:  # connect before the gate: the race is begin() itself
        conn.exec_driver_sql("SELECT 1")
    try:
        for run_id in run_ids:
            start.wait(WAIT)
            try:
                results.put((run_id, "won", store.begin(run_id), ""))
            except RunActiveError as err:
                results.put((run_id, "refused", err.run_id, str(err)))
            except Exception as err:  # reported, the parent fails the test
                results.put((run_id, "error", type(err).__name__, str(err)))
            # Stay alive until every racer tried: a winner that exits early would (rightly)
            # be taken for a dead holder and abandoned by a slower racer.
            done.wait(WAIT)
    finally:
        store.dispose()


def test_simultaneous_begins_from_many_processes_admit_exactly_one(db_url):
    """I4: six processes call begin() at the same instant, three rounds; one wins each round,
    the others are told which run is active; one active row, unique rising generations."""
    racers, rounds = 6, 3
    store = InventoryStore(db_url)
    ids = [[new_run_id() for _ in range(rounds)] for _ in range(racers)]
    start, done = CTX.Barrier(racers + 1), CTX.Barrier(racers + 1)
    results = CTX.Queue()
    procs = [
        CTX.Process(target=_begin_worker, args=(db_url, ids[i], start, done, results))
        for i in range(racers)
    ]
    for p in procs:
        p.start()
    try:
        generations = []
        for rnd in range(rounds):
            start.wait(WAIT)
            done.wait(WAIT)
            got = [results.get(timeout=WAIT) for _ in range(racers)]
            errors = [g for g in got if g[1] == "error"]
            assert not errors, errors
            winners = [g for g in got if g[1] == "won"]
            assert len(winners) == 1, got
            winner, _, generation, _ = winners[0]
            for _, outcome, holder, message in got:
                if outcome == "refused":
                    assert holder == winner
                    assert f"the whole inventory is being read by run {winner}" in message
            with store.engine.connect() as conn:
                rows = conn.execute(sa.select(t.run_state)).mappings().all()
            assert [r["run_id"] for r in rows if r["status"] == "active"] == [winner]
            assert len(rows) == rnd + 1  # refused racers left no row behind
            assert len({r["generation"] for r in rows}) == len(rows)
            generations.append(generation)
            assert store.fail(winner, "test round over")
        assert generations == list(range(1, rounds + 1))
        _assert_lifecycle_invariants(store)
    finally:
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
        store.dispose()


def _cycle_worker(url: str, tag: str, cycles: int, start, results) -> None:
    store = InventoryStore(url)
    mine, refused = [], 0
    try:
        start.wait(WAIT)
        while len(mine) < cycles:
            run_id = new_run_id()
            try:
                generation = store.begin(run_id)
            except RunActiveError:
                refused += 1
                time.sleep(0.001)  # back off, then try again
                continue
            _stage_scope(store, run_id, f"fs:/srv/{tag}", [f"{tag}-{len(mine)}"])
            if len(mine) % 2:
                store.fail(run_id, "test")
            else:
                store.flush(run_id)
                store.verify_and_confirm(run_id)
                store.complete(run_id)
            mine.append((run_id, generation))
        results.put((tag, mine, refused, ""))
    except Exception as err:
        results.put((tag, mine, refused, f"{type(err).__name__}: {err}"))
    finally:
        store.dispose()


def test_contending_runs_get_contiguous_unique_generations(db_url):
    """Four processes each push four runs through while contending for the inventory: every
    generation is handed out once, none is skipped, nothing stays active."""
    workers, cycles = 4, 4
    store = InventoryStore(db_url)
    start, results = CTX.Barrier(workers), CTX.Queue()
    procs = [
        CTX.Process(target=_cycle_worker, args=(db_url, f"w{i}", cycles, start, results))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=WAIT) for _ in range(workers)]
        assert [g[3] for g in got] == [""] * workers, got
        handed = {run_id: gen for _, mine, _, _ in got for run_id, gen in mine}
        total = workers * cycles
        assert sorted(handed.values()) == list(range(1, total + 1))
        runs = {r.run_id: r for r in store.runs(limit=100)}
        assert {rid: r.generation for rid, r in runs.items()} == handed
        with store.engine.connect() as conn:
            last = conn.execute(sa.select(t.inventory.c.last_generation)).scalar_one()
        assert last == total
        assert Counter(r.status for r in runs.values()) == {
            "completed": total // 2,
            "failed": total // 2,
        }
        _assert_lifecycle_invariants(store)
    finally:
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
        store.dispose()


# --------------------------------------------------------------------------- b: cleanup vs flush

FILLER = [f"f{n:03d}" for n in range(300)]
GONE_NAMES = ["d0", "d1", "d2"]  # seen by run 1 only: legitimately removable by run 2 or later
# (cleanup delay, run 3 delay) after the barrier: varies which side gets there first.
DELAYS = [(0, 0), (0, 0.003), (0.003, 0), (0, 0.015), (0.015, 0), (0, 0.05), (0.05, 0)]


def _race_setup(store: InventoryStore, scope: str) -> tuple[str, str, list[str]]:
    """Run 1 sees a, b, c (+ filler, + GONE); run 2 sees only a (+ filler), completed, its
    cleanup not run yet. Returns (run 2, run 3 id, what run 3 will see)."""
    run_once(store, {scope: ["a", "b", "c", *FILLER, *GONE_NAMES]})
    run2, _ = run_once(store, {scope: ["a", *FILLER]}, cleanup=False)
    return run2, new_run_id(), ["a", "b", "c", *FILLER]


def _check_race_outcome(
    store: InventoryStore, scope: str, before: set[str], run2: str, run3: str, seen3: list[str]
) -> str:
    """Every invariant after one race; returns which interleaving the evidence shows."""
    after = store.project_keys(scope)
    seen3_keys = {key(n, scope) for n in seen3}
    info3 = store.get_run(run3)
    assert (info3.status, info3.flush_succeeded) == ("completed", True)
    assert seen3_keys <= after, f"I5 broken: lost {sorted(seen3_keys - after)}"  # I5, I2
    rows = {r["project_key"]: r for r in store.projects() if r["scope_key"] == scope}
    for k in seen3_keys:
        assert rows[k]["seen_generation"] == info3.generation
        assert rows[k]["last_confirmed_run_id"] == run3
    gone = {key(n, scope) for n in GONE_NAMES}
    assert before - after <= gone  # I1: only what neither run 2 nor run 3 saw
    history = store.history(run2)
    removed = {h.project_key for h in history}
    assert before - after <= removed  # I6: every removal recorded …
    assert removed <= {key(n, scope) for n in ("b", "c", *GONE_NAMES)}  # … and only unseen rows
    assert len(history) == len(removed)
    for h in history:  # a recorded removal is either still gone or was seen again by run 3
        assert h.project_key not in after or h.project_key in seen3_keys
    record = store.cleanup_record(run2)
    assert record is not None and record.status in ("done", "noop")
    _assert_lifecycle_invariants(store)
    if removed & seen3_keys:
        return "cleanup first: b, c removed, then written back by the flush"
    if any((s["skipped_reason"] or "").startswith("superseded") for s in record.details["scopes"]):
        return "run 3 completed first: cleanup superseded"
    return "flush first: b, c fresh, cleanup skipped them"


def test_cleanup_racing_a_newer_runs_flush_never_loses_what_the_newer_run_saw(db_url):
    """I5 under a real race: run 2's cleanup and run 3's begin/stage/flush/verify/complete start
    in two processes at the same barrier, 14 times with varied head starts; b and c, which run 3
    saw, always survive, and every invariant holds after each race."""
    iterations = 14
    store = InventoryStore(db_url)
    results, gate = CTX.Queue(), CTX.Barrier(2)
    cleaner = Worker(db_url, results, gate, app="ep_cleaner")
    runner = Worker(db_url, results, gate, app="ep_runner")
    seen_orders: Counter[str] = Counter()
    try:
        for i in range(iterations):
            scope = f"fs:/srv/race{i:02d}"
            run2, run3, seen3 = _race_setup(store, scope)
            before = store.project_keys(scope)
            ops3: list[tuple] = [("flush", run3), ("verify", run3), ("complete", run3)]
            if i % 2:  # run 3 begun and staged beforehand: the race is flush vs cleanup
                store.begin(run3)
                _stage_scope(store, run3, scope, seen3)
            else:  # the whole of run 3 races the cleanup
                ops3 = [("begin", run3), ("stage_scope", run3, scope, seen3), *ops3]
            clean_delay, run_delay = DELAYS[i % len(DELAYS)]
            cleaner.send("cleanup", [("cleanup", run2)], gate=True, delay=clean_delay)
            runner.send("run3", ops3, gate=True, delay=run_delay)
            _collect(results, 2)
            seen_orders[_check_race_outcome(store, scope, before, run2, run3, seen3)] += 1
        print(f"\n[{store.dialect}] interleavings seen in {iterations} races: {dict(seen_orders)}")
    finally:
        cleaner.stop()
        runner.stop()
        store.dispose()


@only_postgresql
def test_pg_cleanup_does_not_wait_on_rows_a_newer_run_is_flushing(db_url):
    """Forced interleaving: run 3's flush has upserted b, c (row locks held, not committed).
    Run 2's cleanup must leave b, c alone (run 3 staged them: it has seen them), so it neither
    blocks on their locks nor counts them, and records only what it really did."""
    store = InventoryStore(db_url)
    results = CTX.Queue()
    cleaner = Worker(db_url, results, app="ep_cleaner")
    runner = Worker(db_url, results, app="ep_runner")
    try:
        run2, run3, seen3 = _race_setup(store, SCOPE)
        before = store.project_keys()
        store.begin(run3)
        _stage_scope(store, run3, SCOPE, seen3)
        ops3 = [("flush", run3), ("verify", run3), ("complete", run3)]
        runner.send("run3", ops3, pause_before="flushed_count=")
        assert runner.paused.wait(WAIT)
        cleaner.send("cleanup", [("cleanup", run2)])
        (done,) = _collect(results, 1).values()  # finishes while the flush still holds locks
        cleanup = done["cleanup"]
        runner.release.set()
        _collect(results, 1)
        gone = sorted(key(n) for n in GONE_NAMES)
        assert sorted(cleanup["removed_keys"]) == gone
        assert sorted(h.project_key for h in store.history(run2)) == gone
        _check_race_outcome(store, SCOPE, before, run2, run3, seen3)
        for row in store.projects():
            assert row["missing_since"] is None and row["missed_runs"] == 0
        record = store.cleanup_record(run2)
        assert (cleanup["removed"], cleanup["marked_missing"]) == (3, 0)
        assert (record.removed, record.marked_missing, record.candidates) == (3, 0, 3)
    finally:
        cleaner.stop()
        runner.stop()
        store.dispose()


# --------------------------------------------------------------------------- c: terminated flush


def _flush_child(url: str, run_id: str, ready, results) -> None:
    store = InventoryStore(url)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    ready.set()
    started = time.monotonic()
    try:
        store.flush(run_id)
        results.put(("returned", time.monotonic() - started, ""))
    except Exception as err:
        results.put(("raised", time.monotonic() - started, f"{type(err).__name__}: {err}"))
    finally:
        store.dispose()


@only_postgresql
@pytest.mark.parametrize("when", ["blocked_on_a_row", "while_writing"])
def test_pg_connection_terminated_mid_flush_loses_nothing(db_url, when):
    """A flush of 100k staged records whose backend is killed with pg_terminate_backend (while it
    writes, or once it has written all but one row and waits on that row's lock): the flush
    raises, the run is marked failed, the inventory is exactly as before, and the next run
    completes and cleans up normally."""
    store = InventoryStore(db_url)
    previous = [f"p{n:04d}" for n in range(1000)]
    run_once(store, {SCOPE: previous})
    before = store.projects()
    run2 = new_run_id()
    store.begin(run2)
    # Every previous project changed (so the upsert rewrites it) plus 99k new ones; the row the
    # parent may lock sorts last and is staged last, so the flush reaches it at the very end.
    last = previous[-1]
    batch: list = []
    for n in range(99_000):
        batch.append(rec(f"n{n:05d}"))
        if len(batch) == 10_000:
            store.stage(run2, batch)
            batch = []
    store.stage(run2, batch + [rec(p, default_branch="next") for p in previous[:-1]])
    store.stage(run2, [rec(last, default_branch="next")])
    store.end_scope(run2, ScopeVerdict(SCOPE, "filesystem", True, 100_000))
    assert store.get_run(run2).staged_count == 100_000

    app = f"ep_flush_{uuid.uuid4().hex[:8]}"
    ready, results = CTX.Event(), CTX.Queue()
    holder = store.engine.connect()
    if when == "blocked_on_a_row":
        holder.execute(
            sa.select(t.projects.c.project_key)
            .where(t.projects.c.project_key == key(last))
            .with_for_update()
        )
    child = CTX.Process(target=_flush_child, args=(_app_url(db_url, app), run2, ready, results))
    child.start()
    try:
        assert ready.wait(WAIT)
        backend = _wait_for_backend(
            # the flush's upsert, counted by its CTE (flush.py)
            store,
            app,
            "WITH written AS%INSERT INTO projects",
            waiting=when == "blocked_on_a_row",
        )
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend["pid"]})
        outcome, seconds, error = results.get(timeout=WAIT)
        child.join(WAIT)
    finally:
        holder.rollback()
        holder.close()
        if child.is_alive():
            child.kill()
            child.join(WAIT)
    print(f"\n[{when}] flush of 100k terminated after {seconds:.2f}s: {error.splitlines()[0]}")
    assert outcome == "raised", "the flush finished before it could be terminated"
    assert "OperationalError" in error and "terminat" in error

    # What the Dagster step's failure handling does:
    assert store.fail(run2, f"flush failed: {error}")
    assert store.complete(run2) == "failed"
    info = store.get_run(run2)
    assert (info.status, info.flush_succeeded, info.flushed_count) == ("failed", False, 0)
    assert store.projects() == before  # not one row added, changed or lost
    with pytest.raises(CleanupRefusedError):
        store.safe_cleanup_old_projects(run2, witness=GONE)
    assert store.active_run() is None

    dropped = previous[:5]
    run3, result = run_once(store, {SCOPE: previous[5:]})
    assert result.status == "done"
    assert result.removed_keys == sorted(key(p) for p in dropped)
    assert store.project_keys() == {key(p) for p in previous[5:]}
    assert sorted(h.project_key for h in store.history(run3)) == result.removed_keys
    assert store.history(run2) == []
    _assert_lifecycle_invariants(store)
    store.dispose()


# --------------------------------------------------------------------------- d: killed process


def _stage_forever_child(url: str, run_id: str, pause_needle: str, paused, release) -> None:
    """begin(), stage a batch, then stage the next one and stop inside its transaction (just
    before the statement containing ``pause_needle``) until killed."""
    store = InventoryStore(url)
    store.begin(run_id)
    store.stage(run_id, [rec(f"k{n}") for n in range(200)])
    _pause_on(store, pause_needle, paused, release)
    store.stage(run_id, [rec(f"k{n}") for n in range(200, 400)])


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_run_process_killed_mid_stage_is_abandoned_by_the_next_begin(db_url, reaped):
    """A child begins a run and is SIGKILLed inside a stage() transaction (fresh heartbeat, write
    lock / row lock held). The next begin() from another process succeeds at once, the killed
    run is failed as abandoned, and nothing it staged reaches ``projects``.

    ``zombie``: the killed child has not been waited for yet by its parent (as when a run
    worker is OOM-killed under a launcher that has not polled it) — its pid still exists, as a
    zombie, but the process is gone just the same."""
    store = InventoryStore(db_url)
    run_once(store, {SCOPE: ["a", "b"]})
    before = store.projects()
    killed = new_run_id()
    paused, release = CTX.Event(), CTX.Event()
    child = CTX.Process(
        target=_stage_forever_child,
        args=(db_url, killed, "scanned_count=(run_state.scanned_count", paused, release),
    )
    child.start()
    try:
        # (No read here: on SQLite even a read waits for the write lock the child holds.)
        assert paused.wait(WAIT), "the child never reached its second stage()"
        os.kill(child.pid, signal.SIGKILL)
        if reaped:
            child.join(WAIT)
            assert child.exitcode == -signal.SIGKILL
        else:
            deadline = time.monotonic() + WAIT
            while _process_state(child.pid) != "Z" and time.monotonic() < deadline:
                time.sleep(0.005)
            assert _process_state(child.pid) == "Z"
        started = time.monotonic()
        nxt = new_run_id()
        store.begin(nxt)
        took = time.monotonic() - started
    finally:
        child.join(WAIT)
    assert took < 10, f"begin() took {took:.1f}s"
    info = store.get_run(killed)
    assert info.status == "failed" and "abandoned" in info.error
    assert f"process {child.pid}" in info.error and "is gone" in info.error
    assert info.staged_count == 200  # the first batch committed, the second never did
    assert store.get_run(nxt).status == "active"
    _stage_scope(store, nxt, SCOPE, ["a", "b", "c"])
    store.flush(nxt)
    store.verify_and_confirm(nxt)
    assert store.complete(nxt) == "completed"
    assert store.project_keys() == {key("a"), key("b"), key("c")}
    assert {r["project_key"] for r in before} <= store.project_keys()
    _assert_lifecycle_invariants(store)
    store.dispose()
