"""Streaming sources into the store: broken sources, missing verdicts, parallel scopes."""

from __future__ import annotations

import threading

import pytest

from enum_pipeline.scan import stage_sources
from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import CleanupPolicy
from enum_pipeline_tests.helpers import GONE, fail_on_sql, key, new_run_id, rec, run_once

A, B = "fs:/srv/a", "fs:/srv/b"


class ListSource:
    """A source replaying a script of records and verdicts (optionally failing midway)."""

    kind = "filesystem"

    def __init__(self, scope, names, *, fail_after=None, verdict=True, barrier=None):
        self.scope, self.names = scope, names
        self.fail_after, self.verdict, self.barrier = fail_after, verdict, barrier
        self.threads: set[str] = set()

    def scope_keys(self):
        return [self.scope]

    def scan(self):
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait(timeout=30)  # both sources are provably running at once
        for i, name in enumerate(self.names):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("listing broke off")
            yield rec(name, self.scope)
        if self.verdict:
            yield ScopeVerdict(self.scope, self.kind, True, len(self.names))


def _finish(store, run_id, policy=None):
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    return store.safe_cleanup_old_projects(run_id, policy, witness=GONE)


def test_a_failing_source_makes_its_scope_incomplete_and_keeps_its_projects(store):
    run_once(store, {A: ["a1", "a2", "a3"], B: ["b1", "b2"]})
    run_id = new_run_id()
    generation = store.begin(run_id)
    summary = stage_sources(
        store,
        run_id,
        generation,
        [ListSource(A, ["a1", "a2", "a3"], fail_after=1), ListSource(B, ["b1"])],
        batch_size=1,
    )
    (incomplete,) = summary.incomplete
    assert incomplete.scope_key == A and "ConnectionError: listing broke off" in incomplete.reason
    assert summary.staged == 2
    result = _finish(store, run_id, CleanupPolicy(allow_empty=True))
    assert store.project_keys() == {key(n, A) for n in ("a1", "a2", "a3")} | {key("b1", B)}
    assert result.kept_incomplete == 2 and result.removed == 1


def test_a_source_ending_without_a_verdict_is_incomplete(store):
    run_once(store, {A: ["a1", "a2"]})
    run_id = new_run_id()
    generation = store.begin(run_id)
    summary = stage_sources(store, run_id, generation, [ListSource(A, ["a1"], verdict=False)])
    assert "without a verdict" in summary.incomplete[0].reason
    _finish(store, run_id)
    assert key("a2", A) in store.project_keys()


def test_store_errors_end_the_scan(store):
    run_id = new_run_id()
    generation = store.begin(run_id)
    with fail_on_sql(store, "scanned_count=(run_state.scanned_count"), pytest.raises(RuntimeError):
        stage_sources(store, run_id, generation, [ListSource(A, ["a1"])])


def test_two_scopes_scanned_in_parallel_both_clean_up(store):
    run_once(store, {A: ["a1", "a2", "a3"], B: ["b1", "b2", "b3"]})
    barrier = threading.Barrier(2)
    sources = [
        ListSource(A, ["a1", "a3"], barrier=barrier),
        ListSource(B, ["b2"], barrier=barrier),
    ]
    run_id = new_run_id()
    generation = store.begin(run_id)
    summary = stage_sources(store, run_id, generation, sources, batch_size=1, parallel_sources=2)
    assert sources[0].threads != sources[1].threads
    assert summary.staged == 3 and not summary.incomplete
    result = _finish(store, run_id)
    assert store.project_keys() == {key("a1", A), key("a3", A), key("b2", B)}
    assert sorted(result.removed_keys) == sorted([key("a2", A), key("b1", B), key("b3", B)])
