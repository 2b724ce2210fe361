"""The run lease on PostgreSQL: a dead holder is seen at once from any machine.

The process holding an active run keeps a session-level advisory lock on a connection of its own
(``run_state.lease``). These tests fake "another host" by rewriting the run's ``host`` column, so
the same-host pid check cannot help and only the lease can tell a live holder from a dead one.
SQLite has no sessions to watch (one file, one host): there the pid check and the heartbeat
timeout apply, as the rest of the suite shows on both backends.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
import sqlalchemy as sa

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import InventoryStore, RunActiveError, RunNotActiveError
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import (
    SCOPE,
    key,
    lease_holders,
    new_run_id,
    pg_schema_url,
    rec,
    run_once,
    terminate_backends,
)

CTX = mp.get_context("spawn")
WAIT = 60.0
OTHER_HOST = "build-07.example.invalid"

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _move_to_other_host(store: InventoryStore, run_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(t.run_state).where(t.run_state.c.run_id == run_id).values(host=OTHER_HOST)
        )


def _finish(store: InventoryStore, run_id: str, names: list[str]) -> None:
    store.stage(run_id, [rec(n) for n in names])
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, len(names)))
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"


def test_the_holder_keeps_its_lease_while_active_and_drops_it_when_the_run_ends(db_url):
    store = InventoryStore(db_url)
    done = new_run_id()
    store.begin(done)
    assert len(lease_holders(store, done)) == 1
    _finish(store, done, ["a"])
    assert lease_holders(store, done) == []

    failed = new_run_id()
    store.begin(failed)
    assert len(lease_holders(store, failed)) == 1
    assert store.fail(failed, "scan failed")
    assert lease_holders(store, failed) == []

    resumed = store.resume(failed, "attempt-2")
    assert resumed == store.get_run(failed).generation
    assert len(lease_holders(store, failed)) == 1
    store.dispose()  # the process ends: its session, and so the lease, goes with it
    assert lease_holders(InventoryStore(db_url), failed) == []


def _hold_run_child(url: str, run_id: str, ready) -> None:
    """begin() and stage a batch, then sit idle (as a run blocked on a slow scan) until killed."""
    store = InventoryStore(url)
    store.begin(run_id)
    store.stage(run_id, [rec(f"k{n}") for n in range(50)])
    ready.set()
    time.sleep(WAIT * 10)


def test_a_holder_on_another_host_is_taken_over_the_moment_its_session_dies(db_url):
    """A run held by a live process on "another host" keeps the inventory (fresh heartbeat, lease
    held); once that process is killed, the next begin() succeeds at once instead of waiting out
    the 15-minute heartbeat timeout, and nothing the dead run staged reaches ``projects``."""
    store = InventoryStore(db_url)
    run_once(store, {SCOPE: ["a", "b"]})
    before = store.projects()
    held = new_run_id()
    ready = CTX.Event()
    child = CTX.Process(target=_hold_run_child, args=(db_url, held, ready))
    child.start()
    try:
        assert ready.wait(WAIT), "the child never began its run"
        _move_to_other_host(store, held)
        with pytest.raises(RunActiveError, match=held):
            store.begin(new_run_id())
        assert store.reap() == []
        os.kill(child.pid, signal.SIGKILL)
        child.join(WAIT)
        started = time.monotonic()
        nxt = new_run_id()
        while True:  # the server notices the closed socket within moments
            try:
                store.begin(nxt)
                break
            except RunActiveError:
                assert time.monotonic() - started < 10, "the dead holder's lease never freed"
                time.sleep(0.02)
    finally:
        if child.is_alive():
            child.kill()
            child.join(WAIT)
    info = store.get_run(held)
    assert info.status == "failed" and "abandoned" in info.error
    assert "database session" in info.error and OTHER_HOST in info.error
    assert store.projects() == before
    _finish(store, nxt, ["a", "b", "c"])
    assert store.project_keys() == {key("a"), key("b"), key("c")}
    store.dispose()


def test_the_reaper_fails_a_run_whose_session_was_terminated_and_the_holder_is_fenced(db_url):
    holder, reaper = InventoryStore(db_url), InventoryStore(db_url)
    run_once(holder, {SCOPE: ["a", "b"]})
    before = holder.projects()
    run_id = new_run_id()
    holder.begin(run_id)
    holder.stage(run_id, [rec("a"), rec("z")])
    holder.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 2))
    _move_to_other_host(holder, run_id)
    assert reaper.reap() == []  # alive: lease held, heartbeat fresh
    terminate_backends(reaper, lease_holders(reaper, run_id))
    assert reaper.reap() == [run_id]
    info = reaper.get_run(run_id)
    assert info.status == "failed" and "lease" in info.error
    with pytest.raises(RunNotActiveError):
        holder.flush(run_id)  # the old holder, still running, can no longer write
    assert holder.projects() == before  # "b" kept, "z" never added
    nxt, result = run_once(reaper, {SCOPE: ["a"]})
    assert result.removed_keys == [key("b")]
    holder.dispose()
    reaper.dispose()


def test_a_holder_whose_lease_session_dropped_takes_it_again_on_its_next_heartbeat(db_url):
    """A dropped connection is not a dead process: the holder's next heartbeat (every staged
    batch) takes the lease again, and the run keeps the inventory."""
    holder, other = InventoryStore(db_url), InventoryStore(db_url)
    run_id = new_run_id()
    holder.begin(run_id)
    _move_to_other_host(holder, run_id)
    terminate_backends(other, lease_holders(other, run_id))
    assert lease_holders(other, run_id) == []
    holder.stage(run_id, [rec("a")])  # heartbeat
    assert len(lease_holders(other, run_id)) == 1
    with pytest.raises(RunActiveError, match=run_id):
        other.begin(new_run_id())
    assert other.reap() == []
    _finish(holder, run_id, ["b"])
    assert other.project_keys() == {key("a"), key("b")}
    holder.dispose()
    other.dispose()


def test_resume_of_an_active_run_waits_for_its_holder_to_be_gone(db_url):
    """A re-execution must not take over a run whose first attempt is still alive somewhere."""
    holder, retry = InventoryStore(db_url), InventoryStore(db_url)
    run_id = new_run_id()
    holder.begin(run_id)
    holder.stage(run_id, [rec("a")])
    with pytest.raises(RunActiveError, match="lease"):
        retry.resume(run_id, "attempt-2")
    assert holder.get_run(run_id).attempt_run_id == run_id
    holder.dispose()  # the first attempt's process ends
    assert retry.resume(run_id, "attempt-2") == holder.get_run(run_id).generation
    info = retry.get_run(run_id)
    assert (info.status, info.attempt_run_id) == ("active", "attempt-2")
    assert len(lease_holders(retry, run_id)) == 1
    retry.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 1))
    retry.flush(run_id)
    retry.verify_and_confirm(run_id)
    assert retry.complete(run_id) == "completed"
    assert retry.project_keys() == {key("a")}
    retry.dispose()


def test_inventories_in_two_schemas_of_one_database_hold_separate_leases(db_url, request):
    """Two inventories (schemas) of one PostgreSQL database each run their generation 1 at the
    same time: the lease keys differ by inventory, so neither refuses nor takes over the other."""
    other_url = pg_schema_url(request.getfixturevalue("pg_database"))
    first, second = InventoryStore(db_url), InventoryStore(other_url)
    a, b = new_run_id(), new_run_id()
    assert first.begin(a) == second.begin(b) == 1
    assert first.get_run(a).lease != second.get_run(b).lease
    assert len(lease_holders(first, a)) == 1 and len(lease_holders(second, b)) == 1
    assert first.reap() == [] and second.reap() == []
    _finish(first, a, ["a"])
    _finish(second, b, ["b"])
    assert first.project_keys() == {key("a")} and second.project_keys() == {key("b")}
    first.dispose()
    second.dispose()


def test_the_lease_check_holds_in_a_process_with_many_descriptors(db_url):
    """The lease session's socket number passes 1024 in a busy process (the daemon, the
    webserver): checking it each batch still costs no new session and keeps the one lease."""
    import os

    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = InventoryStore(db_url)
        run_id = new_run_id()
        store.begin(run_id)
        held = store._ctx.leases._leases[run_id][0]
        assert held.fileno() > 1024
        store.stage(run_id, [rec("a")])
        store.stage(run_id, [rec("b")])
        assert store._ctx.leases._leases[run_id][0] is held
        assert len(lease_holders(store, run_id)) == 1
        _finish(store, run_id, ["c"])
        store.dispose()
    finally:
        for fd in spare:
            os.close(fd)
