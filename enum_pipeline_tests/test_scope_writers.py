"""One writer per scope, not per inventory (issue 21), on SQLite and PostgreSQL.

Runs over disjoint scope sets are active at once and each finishes on its own; a run over a
scope a live run reads is refused in one sentence naming that run and the scope; a run that
does not name its scopes claims the whole inventory. Generations stay one sequence, so fencing
holds when a repository moves between the scopes of two concurrent runs, in either order of
finishing. A killed holder of one scope blocks no other, and the next run over its scope
abandons it. Real processes run over disjoint scopes at once and lose nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from enum_pipeline import steps
from enum_pipeline.store import CleanupPolicy, InventoryStore, RunActiveError
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import (
    GONE,
    StaticSource,
    WorldWitness,
    key,
    new_run_id,
    rec,
    run_verdicts,
    verdict,
)

CTX = mp.get_context("spawn")
WAIT = 60.0
OTHER_HOST = "build-07.example.invalid"
A, B, C, D = "fs:/srv/a", "fs:/srv/b", "fs:/srv/c", "fs:/srv/d"
LENIENT = CleanupPolicy(max_delete_fraction=None, max_delete_count=None)


def _scan(store: InventoryStore, run_id: str, scope: str, records) -> None:
    records = [r if not isinstance(r, str) else rec(r, scope) for r in records]
    store.stage(run_id, records)
    store.end_scope(run_id, verdict(scope, seen=len(records)))


def _finish(store: InventoryStore, run_id: str) -> None:
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed", store.get_run(run_id).error


def _keys(scope: str, names) -> set[str]:
    return {key(n, scope) for n in names}


def _whole_sentence(err: RunActiveError, run_id: str, scope: str) -> None:
    """The refusal is one sentence naming the live run and the scope the two share."""
    text = str(err)
    assert err.run_id == run_id
    assert text.startswith(f"{scope} is being read by run {run_id} (heartbeat ")
    assert f"on host {socket.gethostname()} pid {os.getpid()}" in text
    assert text.endswith("refusing to start another run over it")
    assert "\n" not in text and text.count(". ") == 0


# --------------------------------------------------------------------------- disjoint runs


def test_runs_over_disjoint_scopes_are_active_at_once_and_each_cleans_only_its_own(db_url):
    """Two runs over A and B are active together, flush, verify and complete interleaved; each
    cleanup removes only its own scope's confirmed absences (the older one's late, after the
    newer's), rows of configured scopes neither read are not orphaned, unconfigured ones are,
    and ``run_changes`` tells each run's own additions."""
    store = InventoryStore(db_url)
    run_verdicts(
        store,
        {A: ["a1", "a2", "a3"], B: ["b1", "b2", "b3"], C: ["c1"], D: ["d1"]},
        policy=LENIENT,
    )
    configured = [A, B, C]
    older, newer = new_run_id(), new_run_id()
    g1 = store.begin(older, scopes=[A], policy=LENIENT, configured_scopes=configured)
    g2 = store.begin(newer, scopes=[B], policy=LENIENT, configured_scopes=configured)
    assert g2 == g1 + 1
    assert [r.run_id for r in store.active_runs()] == [older, newer]
    assert store.get_run(older).scopes == [A] and store.get_run(newer).scopes == [B]
    _scan(store, newer, B, ["b1", "b3", "b4"])
    _scan(store, older, A, ["a1", "a2", "a5"])
    store.flush(newer)
    store.flush(older)
    store.verify_and_confirm(older)
    store.verify_and_confirm(newer)
    assert store.reap() == []  # both holders alive
    assert store.complete(newer) == "completed"
    assert store.complete(older) == "completed"

    assert [c.project_key for c in store.run_changes(older)] == [key("a5", A)]
    assert [c.project_key for c in store.run_changes(newer)] == [key("b4", B)]

    cleaned_newer = store.safe_cleanup_old_projects(newer, witness=WorldWitness())
    assert cleaned_newer.removed_keys == [key("b2", B)]
    cleaned_older = store.safe_cleanup_old_projects(older, witness=WorldWitness())
    assert cleaned_older.removed_keys == [key("a3", A)]
    assert store.project_keys() == (
        _keys(A, ["a1", "a2", "a5"])
        | _keys(B, ["b1", "b3", "b4"])
        | _keys(C, ["c1"])
        | _keys(D, ["d1"])
    )
    assert [r["project_key"] for r in store.kept_projects()] == [key("d1", D)]
    assert {h.project_key: h.removed_by_run_id for h in store.history()} == {
        key("b2", B): newer,
        key("a3", A): older,
    }
    store.dispose()


# --------------------------------------------------------------------------- refusals


def test_an_overlapping_begin_is_refused_in_one_sentence_naming_the_run_and_the_scope(db_url):
    store = InventoryStore(db_url)
    holder = new_run_id()
    store.begin(holder, scopes=[A, B])
    refused = new_run_id()
    with pytest.raises(RunActiveError) as err:
        store.begin(refused, scopes=[C, B])
    _whole_sentence(err.value, holder, f"scope {B}")
    with store.engine.connect() as conn:  # the refused run left no row behind
        assert conn.execute(sa.select(t.run_state.c.run_id)).scalars().all() == [holder]
    other = new_run_id()
    assert store.begin(other, scopes=[C]) == store.get_run(holder).generation + 1
    store.dispose()


def test_a_whole_inventory_run_is_refused_by_any_active_run_and_refuses_every_other(db_url):
    store = InventoryStore(db_url)
    narrow = new_run_id()
    store.begin(narrow, scopes=[B])
    with pytest.raises(RunActiveError) as err:
        store.begin(new_run_id())  # no scopes named: the whole inventory
    _whole_sentence(err.value, narrow, f"scope {B}")
    assert store.fail(narrow, "test")

    whole = new_run_id()
    store.begin(whole)
    with pytest.raises(RunActiveError) as err:
        store.begin(new_run_id(), scopes=[C])
    _whole_sentence(err.value, whole, f"scope {C}")
    with pytest.raises(RunActiveError) as err:
        store.begin(new_run_id())
    _whole_sentence(err.value, whole, "the whole inventory")
    assert store.begin(new_run_id(), scopes=[]) > 0  # a run reading nothing overlaps nothing
    store.dispose()


def test_start_run_claims_its_sources_scopes_or_the_whole_inventory_for_a_callable(db_url):
    store = InventoryStore(db_url)
    source = StaticSource({A: ([rec("a1", A)], verdict(A, seen=1))})
    listed = new_run_id()
    steps.start_run(store, listed, [source])
    assert store.get_run(listed).scopes == [A]
    called = new_run_id()
    with pytest.raises(RunActiveError, match=f"scope {A} is being read by run {listed}"):
        steps.start_run(store, called, lambda: [source])
    steps.flush_run(store, listed)
    steps.verify_run(store, listed)
    steps.finish_run(store, listed)
    steps.start_run(store, called, lambda: [source])
    assert store.get_run(called).scopes is None
    store.dispose()


def test_a_failed_run_resumes_past_disjoint_newer_runs_but_not_an_overlapping_one(db_url):
    store = InventoryStore(db_url)
    failed = new_run_id()
    store.begin(failed, scopes=[A])
    _scan(store, failed, A, ["a1"])
    store.fail(failed, "flush step crashed")
    disjoint = new_run_id()
    store.begin(disjoint, scopes=[B])  # newer, still active, over another scope
    assert store.resume(failed, "attempt-2") == store.get_run(failed).generation
    _finish(store, failed)
    assert store.project_keys(A) == _keys(A, ["a1"])

    again = new_run_id()
    store.begin(again, scopes=[C])
    _scan(store, again, C, ["c1"])
    store.fail(again, "flush step crashed")
    active = new_run_id()
    store.begin(active, scopes=[C, D])
    with pytest.raises(RunActiveError, match=f"scope {C} is being read by run {active}"):
        store.resume(again, "attempt-2")
    store.fail(active, "test")
    with pytest.raises(Exception, match="cannot resume: generation .* started after it"):
        store.resume(again, "attempt-3")
    assert store.get_run(again).status == "failed"
    store.dispose()


# --------------------------------------------------------------------------- staging


def test_pruning_staging_keeps_every_active_run_and_a_pruned_disjoint_run_holds_nothing(db_url):
    """While a run over A is active, runs over B complete and prune staging: A's staging is
    intact and its flush verifies; then runs over B prune the staging of runs newer than A's,
    and A's late cleanup is not held for it (those completed runs read another scope)."""
    store = InventoryStore(db_url)
    run_verdicts(store, {A: ["a1", "a2"], B: ["b1"]}, policy=LENIENT)
    slow = new_run_id()
    store.begin(slow, scopes=[A], policy=LENIENT)
    _scan(store, slow, A, ["a1"])
    for n in range(4):
        run_id = new_run_id()
        store.begin(run_id, scopes=[B], policy=LENIENT)
        _scan(store, run_id, B, ["b1", f"b{n + 2}"])
        _finish(store, run_id)
        store.prune_staging(keep_runs=1)
    assert [r["project_key"] for r in store.staged_rows(slow)] == [key("a1", A)]
    _finish(store, slow)
    for _ in range(3):
        run_id = new_run_id()
        store.begin(run_id, scopes=[B], policy=LENIENT)
        _scan(store, run_id, B, ["b1"])
        _finish(store, run_id)
        store.prune_staging(keep_runs=1)
    assert list(store.staged_rows(slow)) == []  # the newest two completed are B's now
    result = store.safe_cleanup_old_projects(slow, witness=GONE)
    assert result.removed_keys == [key("a2", A)], result.scopes
    store.dispose()


# --------------------------------------------------------------------------- fencing


@pytest.mark.parametrize("first", ["older", "newer"])
def test_a_repository_transferred_between_two_concurrent_runs_keeps_the_newer_view(db_url, first):
    """Repository K moves from owner A to owner B while a run over A (older generation, read
    before the move) and one over B (newer, read after it) are both active: whichever flushes
    first, K ends with the newer run's values and confirmation, both runs verify and complete,
    and neither cleanup removes it."""
    store = InventoryStore(db_url)
    moved = rec("k", A, description="before the move")
    run_verdicts(store, {A: [moved, rec("a1", A)], B: ["b1"]}, policy=LENIENT)
    older, newer = new_run_id(), new_run_id()
    g1 = store.begin(older, scopes=[A], policy=LENIENT)
    g2 = store.begin(newer, scopes=[B], policy=LENIENT)
    _scan(store, older, A, [moved, rec("a1", A)])
    after = replace(moved, scope_key=B, location="/srv/b/k", description="after the move")
    _scan(store, newer, B, [after, rec("b1", B)])
    order = [older, newer] if first == "older" else [newer, older]
    flushed = {run_id: store.flush(run_id) for run_id in order}
    verified = {run_id: store.verify_and_confirm(run_id) for run_id in order}
    for run_id in order:
        assert store.complete(run_id) == "completed"
    expected_superseded = 1 if first == "newer" else 0
    assert flushed[older].superseded == expected_superseded
    assert verified[older].superseded == 1  # verified after both flushes, in either order
    assert verified[newer].superseded == 0 and verified[newer].present == 2

    row = next(r for r in store.projects() if r["project_key"] == moved.project_key)
    assert (row["scope_key"], row["description"]) == (B, "after the move")
    assert (row["seen_generation"], row["run_id"]) == (g2, newer)
    assert (row["last_confirmed_run_id"], row["confirmed_generation"]) == (newer, g2)
    assert g1 < g2
    # each run tells its own changes: the move is the newer run's, not the older's
    assert moved.project_key not in {c.project_key for c in store.run_changes(older)}
    changes = {c.project_key: c for c in store.run_changes(newer)}
    assert changes[moved.project_key].change == "changed"
    for run_id in order:  # a late cleanup of the older run removes nothing the newer saw
        store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert store.project_keys() == {moved.project_key, key("a1", A), key("b1", B)}
    assert store.history() == []
    store.dispose()


def test_an_older_run_that_missed_a_moved_repository_never_removes_the_newer_runs_row(db_url):
    """The run over A reads after the move (K is not there), the newer run over B sees K: the
    older run's late cleanup does not remove K, whether the newer run flushed or only staged."""
    store = InventoryStore(db_url)
    moved = rec("k", A)
    run_verdicts(store, {A: [moved, rec("a1", A)]}, policy=LENIENT)
    older, newer = new_run_id(), new_run_id()
    store.begin(older, scopes=[A], policy=LENIENT)
    store.begin(newer, scopes=[B], policy=LENIENT)
    _scan(store, older, A, ["a1"])
    _scan(store, newer, B, [replace(moved, scope_key=B, location="/srv/b/k")])
    _finish(store, older)
    staged_only = store.safe_cleanup_old_projects(older, witness=GONE)
    assert moved.project_key in store.project_keys(), staged_only.entries
    _finish(store, newer)
    assert store.project_keys(B) == {moved.project_key}
    store.dispose()


# --------------------------------------------------------------------------- a killed holder


def _hold_scope_child(url: str, run_id: str, scope: str, ready) -> None:
    """Begin a run over ``scope`` and stage a batch, then sit idle until killed."""
    store = InventoryStore(url)
    store.begin(run_id, scopes=[scope])
    store.stage(run_id, [rec(f"k{n}", scope) for n in range(20)])
    ready.set()
    time.sleep(WAIT * 10)


def test_a_killed_holder_of_one_scope_blocks_no_other_and_the_next_run_over_it_takes_over(
    db_url,
):
    """A child process holds a run over A and is killed with SIGKILL (on PostgreSQL as if on
    another host, so only its lease tells it died). While it lives, a run over B begins and a
    run over A is refused naming it; once it is dead, a run over A and C abandons it, and the
    run over B, alive, is untouched."""
    store = InventoryStore(db_url)
    held = new_run_id()
    ready = CTX.Event()
    child = CTX.Process(target=_hold_scope_child, args=(db_url, held, A, ready))
    child.start()
    try:
        assert ready.wait(WAIT), "the child never began its run"
        if store.dialect == "postgresql":
            with store.engine.begin() as conn:
                conn.execute(
                    sa.update(t.run_state)
                    .where(t.run_state.c.run_id == held)
                    .values(host=OTHER_HOST)
                )
        other = new_run_id()
        store.begin(other, scopes=[B])
        with pytest.raises(RunActiveError, match=f"scope {A} is being read by run {held}"):
            store.begin(new_run_id(), scopes=[C, A])
        os.kill(child.pid, signal.SIGKILL)
        child.join(WAIT)
        started, nxt = time.monotonic(), new_run_id()
        while True:  # the server notices the closed socket within moments
            try:
                store.begin(nxt, scopes=[A, C])
                break
            except RunActiveError:
                assert time.monotonic() - started < 10, "the dead holder was never taken over"
                time.sleep(0.02)
    finally:
        if child.is_alive():
            child.kill()
            child.join(WAIT)
    info = store.get_run(held)
    assert info.status == "failed" and "abandoned" in info.error
    assert store.get_run(other).status == "active"
    _scan(store, other, B, ["b1"])
    _scan(store, nxt, A, ["a1"])
    _finish(store, nxt)
    _finish(store, other)
    assert store.project_keys() == {key("a1", A), key("b1", B)}
    store.dispose()


# --------------------------------------------------------------------------- real processes


def _scope_worker(url: str, scope: str, cycles: int, gate, results) -> None:
    """``cycles`` whole runs over ``scope``, each begun while every other worker's run is
    active too (``gate``); each cycle drops one project and adds one."""
    store = InventoryStore(url)
    names = [f"p{n}" for n in range(5)]
    try:
        for cycle in range(cycles):
            names = names[1:] + [f"p{cycle + 5}"]
            run_id = new_run_id()
            records = [rec(n, scope) for n in names]
            source = StaticSource({scope: (records, verdict(scope, seen=len(records)))})
            steps.start_run(store, run_id, [source], policy=LENIENT)
            gate.wait(WAIT)  # every worker's run is active here
            steps.flush_run(store, run_id)
            steps.verify_run(store, run_id)
            assert steps.finish_run(store, run_id).status == "completed"
            store.safe_cleanup_old_projects(run_id, witness=GONE)
        results.put((scope, names, ""))
    except Exception as err:  # reported, the parent fails the test
        results.put((scope, names, f"{type(err).__name__}: {err}"))
    finally:
        store.dispose()


def test_concurrent_processes_over_disjoint_scopes_all_run_and_lose_nothing(db_url):
    """Four processes run three cycles each over their own scope, every cycle's runs active at
    once: none is refused, every run completes, generations are one sequence, and the inventory
    is exactly what each scope holds last."""
    workers, cycles = 4, 3
    store = InventoryStore(db_url)
    scopes = [f"fs:/srv/w{n}" for n in range(workers)]
    gate, results = CTX.Barrier(workers), CTX.Queue()
    procs = [
        CTX.Process(target=_scope_worker, args=(db_url, scope, cycles, gate, results))
        for scope in scopes
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=WAIT * 3) for _ in procs]
    finally:
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
    assert [g[2] for g in got] == [""] * workers, got
    expected = set().union(*(_keys(scope, names) for scope, names, _ in got))
    assert store.project_keys() == expected
    runs = store.runs(limit=100)
    assert len(runs) == workers * cycles
    assert all(r.status == "completed" and r.flush_succeeded for r in runs)
    assert sorted(r.generation for r in runs) == list(range(1, workers * cycles + 1))
    removed = {h.project_key for h in store.history()}
    assert removed == {key(f"p{n}", s) for s in scopes for n in range(1, cycles)}
    store.dispose()


def _race_worker(url: str, scopes: list[str], run_ids: list[str], start, done, results) -> None:
    store = InventoryStore(url)
    with store.engine.connect() as conn:  # connect before the gate: the race is begin() itself
        conn.exec_driver_sql("SELECT 1")
    try:
        for run_id in run_ids:
            start.wait(WAIT)
            try:
                results.put((run_id, scopes, "won", store.begin(run_id, scopes=scopes)))
            except RunActiveError as err:
                results.put((run_id, scopes, "refused", err.run_id))
            except Exception as err:  # reported, the parent fails the test
                results.put((run_id, scopes, "error", f"{type(err).__name__}: {err}"))
            done.wait(WAIT)  # stay alive (a live holder) until every racer tried
    finally:
        store.dispose()


def test_simultaneous_begins_over_overlapping_scope_sets_admit_only_disjoint_runs(db_url):
    """Six processes begin at the same instant, three rounds, over a ring of overlapping scope
    sets and two scopes of their own: the admitted runs' scope sets are pairwise disjoint, the
    two lone scopes are always admitted, each refusal names an admitted run over a shared scope,
    and generations stay one rising sequence."""
    sets = [[A, B], [B, C], [C, D], [D, A], ["fs:/srv/e"], ["fs:/srv/f"]]
    rounds = 3
    store = InventoryStore(db_url)
    ids = [[new_run_id() for _ in range(rounds)] for _ in sets]
    start, done = CTX.Barrier(len(sets) + 1), CTX.Barrier(len(sets) + 1)
    results = CTX.Queue()
    procs = [
        CTX.Process(target=_race_worker, args=(db_url, s, ids[i], start, done, results))
        for i, s in enumerate(sets)
    ]
    for p in procs:
        p.start()
    try:
        generations = []
        for _ in range(rounds):
            start.wait(WAIT)
            got = [results.get(timeout=WAIT) for _ in sets]
            assert [g for g in got if g[2] == "error"] == []
            won = {g[0]: g for g in got if g[2] == "won"}
            claimed = [scope for g in won.values() for scope in g[1]]
            assert len(claimed) == len(set(claimed)), got  # pairwise disjoint
            assert {tuple(g[1]) for g in won.values()} >= {("fs:/srv/e",), ("fs:/srv/f",)}
            for _, scopes, outcome, holder in got:
                if outcome == "refused":
                    assert holder in won and set(won[holder][1]) & set(scopes)
            assert {r.run_id for r in store.active_runs()} == set(won)
            generations += sorted(g[3] for g in won.values())
            done.wait(WAIT)
            for run_id in won:
                assert store.fail(run_id, "round over")
        assert generations == list(range(1, len(generations) + 1))
    finally:
        for p in procs:
            p.join(WAIT)
            if p.is_alive():
                p.kill()
        store.dispose()
