"""Liveness (issue 9 item 6): a live holder keeps its run however slow, a dead one loses it at once.

The step layer's ``RunHolder`` beats from its own thread for the whole run. A run is taken over
only when its holder is provably gone (its pid on this host gone, its PostgreSQL lease free) or,
with no liveness signal at all, its heartbeat expired; a live holder vetoes an old heartbeat.
Every test here runs on SQLite and on PostgreSQL with a 2-second heartbeat timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from enum_pipeline import steps
from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import InventoryStore, RunActiveError, utcnow
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import SCOPE, key, new_run_id, rec

TIMEOUT = timedelta(seconds=2)
SLEEP = 3 * TIMEOUT.total_seconds()  # the source is silent this long: thrice the timeout
LATER = timedelta(hours=1)  # a "now" at which every heartbeat so far has expired
CTX = mp.get_context("spawn")
WAIT = 120.0


class SlowSource:
    """One record, then a long silence (a rate-limit wait, a large tree with few projects)."""

    kind = "filesystem"

    def __init__(self, sleeping, seconds: float):
        self.sleeping, self.seconds = sleeping, seconds

    def scope_keys(self) -> list[str]:
        return [SCOPE]

    def scan(self):
        yield rec("a")
        self.sleeping.set()
        time.sleep(self.seconds)
        yield rec("b")
        yield ScopeVerdict(SCOPE, "filesystem", True, 2)


def _heartbeat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("enum-pipeline-heartbeat")]


def _assert_kept(other: InventoryStore, run_id: str) -> None:
    """Neither a second begin nor the reaper takes the run, even at an expired "now"."""
    for now in (None, utcnow() + LATER):
        with pytest.raises(RunActiveError, match=run_id):
            other.begin(new_run_id(), now=now)
        assert other.reap(now=now) == []
    assert other.get_run(run_id).status == "active"


def test_a_slow_scan_in_this_process_is_neither_reaped_nor_taken_over(db_url):
    store = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    other = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    run_id, sleeping = new_run_id(), threading.Event()
    scan = threading.Thread(
        target=steps.start_run, args=(store, run_id, [SlowSource(sleeping, SLEEP)])
    )
    scan.start()
    assert sleeping.wait(WAIT)
    began = store.get_run(run_id).heartbeat_at
    time.sleep(TIMEOUT.total_seconds() * 1.5)
    assert store.get_run(run_id).heartbeat_at > began  # the holder's thread beat meanwhile
    _assert_kept(other, run_id)
    scan.join(WAIT)
    steps.flush_run(store, run_id)
    assert steps.verify_run(store, run_id).flush_succeeded
    assert steps.finish_run(store, run_id).status == "completed"
    assert store.project_keys() == {key("a"), key("b")}
    assert _heartbeat_threads() == [] and not store.held_here(run_id)
    store.dispose()
    other.dispose()


def _slow_run_child(url: str, run_id: str, sleeping, seconds: float) -> None:
    """A whole run through the step layer in a process of its own, with a slow source."""
    store = InventoryStore(url, heartbeat_timeout=TIMEOUT)
    steps.run_through(store, run_id, [SlowSource(sleeping, seconds)])
    store.dispose()


def _start_child(url: str, run_id: str, seconds: float):
    sleeping = CTX.Event()
    child = CTX.Process(target=_slow_run_child, args=(url, run_id, sleeping, seconds))
    child.start()
    assert sleeping.wait(WAIT), "the child never reached its slow source"
    return child


def test_a_slow_run_in_another_process_completes_and_is_not_reaped(db_url):
    """The holder is another live process: its pid (and on PostgreSQL its lease) vetoes the
    expired heartbeat, and the run completes."""
    other = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    run_id = new_run_id()
    child = _start_child(db_url, run_id, SLEEP)
    try:
        time.sleep(TIMEOUT.total_seconds() * 1.5)
        _assert_kept(other, run_id)
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    info = other.get_run(run_id)
    assert (info.status, info.error) == ("completed", None)
    assert other.project_keys() == {key("a"), key("b")}
    other.dispose()


def test_a_killed_holder_is_taken_over_at_once(db_url):
    other = InventoryStore(db_url, heartbeat_timeout=timedelta(minutes=15))
    run_id = new_run_id()
    child = _start_child(db_url, run_id, WAIT * 10)
    with pytest.raises(RunActiveError, match=run_id):
        other.begin(new_run_id())
    os.kill(child.pid, signal.SIGKILL)
    child.join(WAIT)
    started = time.monotonic()
    nxt = new_run_id()
    while True:  # at once: no heartbeat timeout (15 minutes here) is waited out
        try:
            other.begin(nxt)
            break
        except RunActiveError:
            assert time.monotonic() - started < 10, "the killed holder was never taken over"
            time.sleep(0.02)
    info = other.get_run(run_id)
    assert info.status == "failed" and "abandoned" in info.error
    assert f"process {child.pid}" in info.error or "database session" in info.error
    other.fail(nxt, "test over")
    other.dispose()


def test_the_heartbeat_thread_stops_when_the_run_ends(db_url):
    store = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)

    class Broken:
        kind = "filesystem"

        def scope_keys(self):
            return [SCOPE]

        def scan(self):
            raise OSError("disk gone")
            yield  # a generator: the error comes while scanning

    failed = new_run_id()
    with pytest.raises(KeyError):  # an error outside the sources fails the run too
        steps.start_run(store, failed, lambda: {}["no sources"])
    assert store.get_run(failed).status == "failed" and _heartbeat_threads() == []

    done = new_run_id()
    steps.run_through(store, done, [Broken()])
    assert store.get_run(done).status == "completed" and _heartbeat_threads() == []

    elsewhere = new_run_id()
    steps.start_run(store, elsewhere, [])
    assert len(_heartbeat_threads()) == 1 and store.held_here(elsewhere)
    InventoryStore(db_url).fail(elsewhere, "failed by an operator")
    deadline = time.monotonic() + WAIT
    while _heartbeat_threads() and time.monotonic() < deadline:
        time.sleep(0.05)  # the holder sees at its next beat that its run is no longer active
    assert _heartbeat_threads() == [] and not store.held_here(elsewhere)
    store.dispose()


def test_an_expired_heartbeat_counts_only_without_another_sign_of_the_holder(db_url):
    """A run begun by a process on "another host": on SQLite nothing but the heartbeat tells of
    it, so an expired one is taken over; on PostgreSQL its held lease vetoes the expiry."""
    holder = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    other = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    run_id = new_run_id()
    holder.begin(run_id)
    with holder.engine.begin() as conn:
        conn.execute(
            sa.update(t.run_state)
            .where(t.run_state.c.run_id == run_id)
            .values(host="build-07.example.invalid")
        )
    assert other.reap() == []  # fresh heartbeat: alive either way
    reaped = other.reap(now=utcnow() + LATER)
    if other.dialect == "sqlite":
        assert reaped == [run_id]
        assert "no other sign of its holder" in other.get_run(run_id).error
    else:
        assert reaped == [] and other.get_run(run_id).status == "active"
    holder.dispose()
    other.dispose()


def test_a_reexecution_takes_over_only_once_the_first_attempt_is_gone(db_url):
    """Resuming an active run is a takeover too: refused while the first attempt's process
    lives (its pid; on PostgreSQL its lease), allowed at once when it was killed."""
    other = InventoryStore(db_url, heartbeat_timeout=TIMEOUT)
    run_id = new_run_id()
    child = _start_child(db_url, run_id, WAIT * 10)
    try:
        with pytest.raises(RunActiveError, match=run_id):
            other.resume(run_id, "attempt-2")
        assert other.get_run(run_id).attempt_run_id == run_id
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(WAIT)
    deadline = time.monotonic() + 10
    while True:  # the step layer's re-execution path: resume, then flush
        try:
            steps.flush_run(other, run_id, "attempt-2")
            break
        except RunActiveError:
            assert time.monotonic() < deadline, "the killed attempt was never taken over"
            time.sleep(0.02)
    assert steps.RunHolder.of(other, run_id) is not None  # this process holds it now
    assert steps.verify_run(other, run_id).flush_succeeded
    assert steps.finish_run(other, run_id).status == "completed"
    assert other.get_run(run_id).attempt_run_id == "attempt-2"
    assert _heartbeat_threads() == []
    other.dispose()
