"""The operator views of the store (store/changes.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import CleanupPolicy
from enum_pipeline_tests.helpers import GONE, SCOPE, new_run_id, rec, run_once


def _run(store, records, *, complete=True):
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, records)
    store.end_scope(
        run_id,
        ScopeVerdict(
            scope_key=SCOPE,
            source_kind="filesystem",
            complete=complete,
            seen=len(records),
            reason=None if complete else "root unreadable",
            protected=(),
        ),
    )
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    store.complete(run_id)
    return run_id


def test_run_changes_names_added_changed_with_fields_and_removed(store):
    policy = CleanupPolicy(max_delete_fraction=1.0)
    first = _run(store, [rec("alpha"), rec("beta"), rec("gamma")])
    assert [(c.change, c.name) for c in store.run_changes(first)] == [
        ("added", "alpha"),
        ("added", "beta"),
        ("added", "gamma"),
    ]
    second = _run(store, [rec("alpha", default_branch="trunk"), rec("beta"), rec("delta")])
    assert store.safe_cleanup_old_projects(second, policy, witness=GONE).removed == 1
    changes = store.run_changes(second)
    assert [(c.change, c.name, c.fields) for c in changes] == [
        ("added", "delta", ()),
        ("changed", "alpha", ("default_branch",)),
        ("removed", "gamma", ()),
    ]
    assert all(c.scope_key == SCOPE for c in changes)
    # The first run's delta is unchanged by what the second did.
    assert [c.name for c in store.run_changes(first)] == ["alpha", "beta", "gamma"]


def test_restorable_cleanups_and_scope_summary(store):
    policy = CleanupPolicy(max_delete_fraction=1.0)
    run_once(store, {SCOPE: ["alpha", "beta"]}, policy=policy)
    second, result = run_once(store, {SCOPE: ["alpha"]}, policy=policy)
    assert result.removed == 1
    [item] = store.restorable_cleanups()
    assert (item.run_id, item.count, item.names) == (second, 1, ["beta"])
    assert store.holder() is None
    [scope] = store.scope_summary()
    assert (scope["scope"], scope["total"], scope["incomplete"]) == (SCOPE, 1, False)
    _run(store, [], complete=False)
    [scope] = store.scope_summary()
    assert scope["incomplete"] and scope["reason"] == "root unreadable"
    store.restore(second)
    assert store.restorable_cleanups() == []


def test_cleanup_plan_says_per_project_what_would_happen(store):
    run_once(store, {SCOPE: ["alpha", "beta", "gamma"]})
    run_id, result = run_once(store, {SCOPE: []}, cleanup=True)
    assert result.status == "blocked"
    plan = store.safe_cleanup_old_projects(run_id, dry_run=True, witness=GONE).entries
    assert sorted((e.name, e.action) for e in plan) == [
        ("alpha", "remove"),
        ("beta", "remove"),
        ("gamma", "remove"),
    ]
    # The policy is the one a run is begun with: a run begun under a grace of three runs marks.
    policy = CleanupPolicy(missing_runs_before_delete=3)
    graced, _ = run_once(store, {SCOPE: []}, policy=policy, cleanup=False)
    marking = store.safe_cleanup_old_projects(graced, dry_run=True, witness=GONE).entries
    assert {e.action for e in marking} == {"mark_missing"}
