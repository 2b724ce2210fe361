"""Store semantics of the run lifecycle, each on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import (
    CleanupPolicy,
    CleanupRefusedError,
    FlushVerificationError,
    InventoryStore,
    RunActiveError,
    RunNotActiveError,
    StoreError,
    utcnow,
)
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import GONE, SCOPE, fail_on_sql, key, new_run_id, rec, run_once

OTHER = "fs:/srv/other"


def _begin_and_stage(store, names, scope=SCOPE, complete=True):
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec(n, scope) for n in names])
    store.end_scope(run_id, ScopeVerdict(scope, "filesystem", complete, len(names)))
    return run_id


def test_first_run_inserts_and_confirms(store):
    run_id, cleanup = run_once(store, {SCOPE: ["a", "b", "c"]})
    rows = {r["project_key"]: r for r in store.projects()}
    assert set(rows) == {key("a"), key("b"), key("c")}
    for row in rows.values():
        assert row["run_id"] == run_id
        assert row["last_confirmed_run_id"] == run_id
        assert row["first_seen_at"] == row["last_seen_at"]
    info = store.get_run(run_id)
    assert (info.status, info.flush_succeeded, info.added_count) == ("completed", True, 3)
    assert cleanup.status == "noop"


def test_flush_counts_added_changed_unchanged(store):
    run_once(store, {SCOPE: ["a", "b"]})
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a"), rec("b", default_branch="dev"), rec("c")])
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 3))
    result = store.flush(run_id)
    assert (result.added, result.changed, result.unchanged) == (1, 1, 1)
    store.verify_and_confirm(run_id)
    rows = {r["project_key"]: r for r in store.projects()}
    assert rows[key("b")]["default_branch"] == "dev"
    assert rows[key("a")]["first_seen_at"] < rows[key("a")]["last_seen_at"]


def test_failed_upsert_leaves_every_project_and_fails_the_run(store):
    first, _ = run_once(store, {SCOPE: ["a", "b", "c"]})
    before = store.projects()
    run_id = _begin_and_stage(store, ["a"])
    with fail_on_sql(store, "INSERT INTO projects") as stopped, pytest.raises(RuntimeError):
        store.flush(run_id)
    assert stopped
    store.fail(run_id, "flush failed")
    assert store.complete(run_id) == "failed"
    assert store.projects() == before
    with pytest.raises(CleanupRefusedError):
        store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert store.project_keys() == {key("a"), key("b"), key("c")}
    assert store.get_run(run_id).status == "failed"


def test_failed_verify_leaves_every_project_and_fails_the_run(store):
    run_once(store, {SCOPE: ["a", "b", "c"]})
    run_id = _begin_and_stage(store, ["a"])
    store.flush(run_id)
    with fail_on_sql(store, "SET flush_succeeded"), pytest.raises(RuntimeError):
        store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "failed"
    info = store.get_run(run_id)
    assert (info.status, info.flush_succeeded) == ("failed", False)
    with pytest.raises(CleanupRefusedError):
        store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert store.project_keys() == {key("a"), key("b"), key("c")}


def test_verify_detects_a_lost_write(store):
    run_id = _begin_and_stage(store, ["a", "b"])
    store.flush(run_id)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(t.projects).where(t.projects.c.project_key == key("b")))
    with pytest.raises(FlushVerificationError, match="staged 2"):
        store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "failed"


def test_cleanup_refuses_active_failed_and_unverified_runs(store):
    run_once(store, {SCOPE: ["a", "b"]})
    active = _begin_and_stage(store, ["a"])
    with pytest.raises(CleanupRefusedError, match="active"):
        store.safe_cleanup_old_projects(active, witness=GONE)
    store.fail(active, "test")
    with pytest.raises(CleanupRefusedError, match="failed"):
        store.safe_cleanup_old_projects(active, witness=GONE)
    unverified = _begin_and_stage(store, ["a"])
    store.flush(unverified)
    with store.engine.begin() as conn:  # a row claiming completion without a verified flush
        conn.execute(
            sa.update(t.run_state)
            .where(t.run_state.c.run_id == unverified)
            .values(status="completed")
        )
    with pytest.raises(CleanupRefusedError, match="flush_succeeded=False"):
        store.safe_cleanup_old_projects(unverified, witness=GONE)
    assert store.project_keys() == {key("a"), key("b")}


def test_completed_run_removes_exactly_the_unseen_and_records_history(store):
    run_once(store, {SCOPE: ["a", "b", "c"], OTHER: ["x"]})
    run_id, result = run_once(store, {SCOPE: ["a", "c"], OTHER: ["x"]})
    assert result.status == "done"
    assert result.removed_keys == [key("b")]
    assert store.project_keys() == {key("a"), key("c"), key("x", OTHER)}
    history = store.history(run_id)
    assert [h.project_key for h in history] == [key("b")]
    assert history[0].row["name"] == "b"
    assert store.get_run(run_id).removed_count == 1


def test_incomplete_scope_removes_nothing(store):
    run_once(store, {SCOPE: ["a", "b"], OTHER: ["x", "y"]})
    _, result = run_once(store, {SCOPE: [], OTHER: ["x"]}, complete={SCOPE: False})
    assert store.project_keys() == {key("a"), key("b"), key("x", OTHER)}
    assert result.kept_incomplete == 2
    assert result.removed == 1


def test_scope_not_read_at_all_is_never_cleaned(store):
    run_once(store, {SCOPE: ["a"], OTHER: ["x"]})
    run_once(store, {SCOPE: ["a"]})
    assert key("x", OTHER) in store.project_keys()


def test_protected_sub_scope_keeps_only_its_projects(store):
    run_once(store, {SCOPE: ["a", "locked/b", "locked/c", "d", "lockedness/e"]})
    _, result = run_once(
        store, {SCOPE: ["a"]}, protected={SCOPE: ("/srv/src/locked",)}, policy=_lenient()
    )
    assert store.project_keys() == {key("a"), key("locked/b"), key("locked/c")}
    assert result.removed == 2 and result.kept_incomplete == 2


def test_restore_brings_removed_projects_back(store):
    run_once(store, {SCOPE: ["a", "b", "c"]})
    run_id, result = run_once(store, {SCOPE: ["a"]})
    assert result.removed == 2
    restored = store.restore(run_id)
    assert sorted(restored) == [key("b"), key("c")]
    assert store.project_keys() == {key("a"), key("b"), key("c")}
    assert store.restore(run_id) == []
    assert all(h.restored_at is not None for h in store.history(run_id))


def test_cleanup_is_idempotent(store):
    run_once(store, {SCOPE: ["a", "b", "c"]})
    run_id, first = run_once(store, {SCOPE: ["a", "b"]})
    snapshot = (store.projects(), store.history())
    second = store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert second.already_done and second.removed == first.removed == 1
    assert (store.projects(), store.history()) == snapshot


def test_second_begin_is_refused_while_a_run_is_active(store):
    first = new_run_id()
    store.begin(first)
    with pytest.raises(RunActiveError, match=f"the whole inventory is being read by run {first}"):
        store.begin(new_run_id())
    store.fail(first, "test")
    store.begin(new_run_id())


def test_generations_are_monotonic(store):
    gens = []
    for _ in range(3):
        run_id = new_run_id()
        gens.append(store.begin(run_id))
        store.fail(run_id, "test")
    assert gens == sorted(gens) and len(set(gens)) == 3


def test_expired_heartbeat_is_abandoned_by_the_next_begin(db_url):
    store = InventoryStore(db_url, heartbeat_timeout=timedelta(seconds=30))
    stale = new_run_id()
    store.begin(stale, now=utcnow() - timedelta(minutes=5))
    fresh = new_run_id()
    store.begin(fresh)
    assert store.get_run(stale).status == "failed"
    assert "abandoned" in store.get_run(stale).error
    assert store.get_run(fresh).status == "active"
    store.dispose()


def test_dead_holder_on_this_host_is_abandoned_at_once(store):
    import subprocess

    stale = new_run_id()
    store.begin(stale)
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(t.run_state).where(t.run_state.c.run_id == stale).values(pid=proc.pid)
        )
    store.begin(new_run_id())
    assert "is gone" in store.get_run(stale).error


def test_failed_run_cannot_write(store):
    run_id = _begin_and_stage(store, ["a"])
    store.fail(run_id, "test")
    with pytest.raises(RunNotActiveError):
        store.flush(run_id)
    with pytest.raises(RunNotActiveError):
        store.stage(run_id, [rec("z")])


def test_resume_finishes_a_failed_flush_without_rescanning(store):
    run_once(store, {SCOPE: ["a", "b"]})
    run_id = _begin_and_stage(store, ["a", "b", "c"])
    with fail_on_sql(store, "INSERT INTO projects"), pytest.raises(RuntimeError):
        store.flush(run_id)
    store.fail(run_id, "flush failed")
    store.resume(run_id, "re-execution")
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    assert store.project_keys() == {key("a"), key("b"), key("c")}


def test_resume_is_refused_once_a_newer_run_began(store):
    old = _begin_and_stage(store, ["a"])
    store.fail(old, "test")
    newer = new_run_id()
    store.begin(newer)
    store.fail(newer, "test")
    with pytest.raises(StoreError, match="cannot resume"):
        store.resume(old, "re-execution")


def test_resume_is_refused_once_its_staging_was_pruned(store):
    """A failed run over one scope may resume past newer runs over others, but not once
    pruning dropped its staging: what it scanned is gone, and the refusal says so (before, the
    resume was taken and its flush failed on the missing rows)."""
    other = "fs:/srv/other"
    old = new_run_id()
    store.begin(old, scopes=[SCOPE])
    store.stage(old, [rec("a"), rec("b")])
    store.end_scope(old, ScopeVerdict(SCOPE, "filesystem", True, 2))
    store.fail(old, "test")
    for _ in range(4):  # newer runs over another scope: the old staging is pruned after them
        run_once(store, {other: ["x"]}, cleanup=False)
    store.prune_staging(keep_runs=3)
    with pytest.raises(StoreError, match="its staging was pruned .0 of the 2 rows"):
        store.resume(old, "re-execution")
    assert store.get_run(old).status == "failed"


# --------------------------------------------------------------- fencing (I5)


def test_late_cleanup_of_an_older_run_never_removes_what_a_newer_run_saw(store):
    run_once(store, {SCOPE: ["a", "b"]})
    older, _ = run_once(store, {SCOPE: ["a"]}, cleanup=False)
    run_once(store, {SCOPE: ["a", "b"]}, cleanup=False)
    result = store.safe_cleanup_old_projects(older, witness=GONE)
    assert key("b") in store.project_keys()
    assert result.removed == 0
    assert "superseded" in result.scopes[0].skipped_reason


def test_null_generation_never_deletes(store):
    run_once(store, {SCOPE: ["a", "b"]})
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(t.projects)
            .where(t.projects.c.project_key == key("b"))
            .values(seen_generation=None)
        )
    run_once(store, {SCOPE: ["a"]})
    assert key("b") in store.project_keys()


def test_older_flush_never_overwrites_a_newer_row(store):
    run_once(store, {SCOPE: ["a"]})
    with store.engine.begin() as conn:
        conn.execute(sa.update(t.projects).values(seen_generation=1000, run_id="future"))
    run_id = _begin_and_stage(store, ["a"])
    store.flush(run_id)
    row = store.projects()[0]
    assert (row["seen_generation"], row["run_id"]) == (1000, "future")


# --------------------------------------------------------------- deletion guard


def _lenient(**overrides) -> CleanupPolicy:
    return CleanupPolicy(**{"max_delete_fraction": None, "max_delete_count": None, **overrides})


def test_guard_blocks_emptying_a_scope_and_approval_releases_it(store):
    run_once(store, {SCOPE: ["a", "b"]})
    run_id, result = run_once(store, {SCOPE: []})
    assert result.status == "blocked" and "would remove all 2" in result.reason
    assert store.project_keys() == {key("a"), key("b")}
    assert store.get_run(run_id).status == "completed"
    assert store.cleanup_record(run_id).status == "blocked"
    store.approve_cleanup(run_id, "tester")
    approved = store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert approved.status == "done" and approved.removed == 2
    assert store.project_keys() == set()


def test_guard_blocks_more_than_max_delete_count(store):
    names = [f"p{i}" for i in range(10)]
    run_once(store, {SCOPE: names})
    _, result = run_once(store, {SCOPE: names[:5]}, policy=_lenient(max_delete_count=3))
    assert result.status == "blocked" and "max_delete_count=3" in result.reason
    assert len(store.project_keys()) == 10


def test_guard_blocks_a_large_share_and_holds_back_every_scope(store):
    names = [f"p{i}" for i in range(40)]
    run_once(store, {SCOPE: names, OTHER: ["x", "y"]})
    policy = CleanupPolicy(max_delete_fraction=0.25, max_delete_count=None)
    _, result = run_once(store, {SCOPE: names[:20], OTHER: ["x"]}, policy=policy)
    assert result.status == "blocked" and "50%" in result.reason
    assert key("y", OTHER) in store.project_keys()  # held back as a whole


def test_approval_covers_only_the_numbers_it_was_given(store):
    names = [f"p{i}" for i in range(10)]
    run_once(store, {SCOPE: names})
    policy = _lenient(max_delete_count=1)
    run_id, result = run_once(store, {SCOPE: names[:8]}, policy=policy)
    assert result.status == "blocked"
    store.approve_cleanup(run_id, "tester")
    with store.engine.begin() as conn:  # more became stale since the approval was given
        conn.execute(
            sa.update(t.projects)
            .where(t.projects.c.project_key == key("p0"))
            .values(seen_generation=0)
        )
    again = store.safe_cleanup_old_projects(run_id, policy, witness=GONE)
    assert again.status == "blocked"
    assert len(store.project_keys()) == 10


def test_dry_run_changes_nothing(store):
    run_once(store, {SCOPE: ["a", "b", "c"]})
    run_id, _ = run_once(store, {SCOPE: ["a"]}, cleanup=False)
    preview = store.safe_cleanup_old_projects(run_id, dry_run=True, witness=GONE)
    assert (preview.removed, preview.would_remove, preview.dry_run) == (0, 2, True)
    assert len(store.project_keys()) == 3
    assert store.cleanup_record(run_id) is None


def test_grace_marks_missing_before_removing(store):
    policy = CleanupPolicy(missing_runs_before_delete=2)
    run_once(store, {SCOPE: ["a", "b", "c"]}, policy=policy)
    _, first = run_once(store, {SCOPE: ["a", "b"]}, policy=policy)
    assert (first.removed, first.marked_missing) == (0, 1)
    row = {r["project_key"]: r for r in store.projects()}[key("c")]
    assert row["missing_since"] is not None and row["missed_runs"] == 1
    _, second = run_once(store, {SCOPE: ["a"]}, policy=policy)
    assert second.removed == 1 and key("c") not in store.project_keys()
    assert key("b") in store.project_keys()
    run_once(store, {SCOPE: ["a", "b"]}, policy=policy)
    row = {r["project_key"]: r for r in store.projects()}[key("b")]
    assert row["missing_since"] is None and row["missed_runs"] == 0


def test_scope_on_a_different_filesystem_is_not_cleaned(store):
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a"), rec("b")])
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 2, identity={"st_dev": 1}))
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    store.complete(run_id)
    second = new_run_id()
    store.begin(second)
    store.stage(second, [rec("a")])
    store.end_scope(second, ScopeVerdict(SCOPE, "filesystem", True, 1, identity={"st_dev": 2}))
    store.flush(second)
    store.verify_and_confirm(second)
    store.complete(second)
    result = store.safe_cleanup_old_projects(second, witness=GONE)
    assert "different filesystem" in result.scopes[0].skipped_reason
    assert key("b") in store.project_keys()


def test_a_run_failing_after_its_verified_flush_is_not_a_confirmed_run(store):
    run_once(store, {SCOPE: ["a", "b"]})
    run_id = _begin_and_stage(store, ["a"])
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.fail(run_id, "step crashed after verify")  # e.g. the Dagster step died
    info = store.get_run(run_id)
    assert (info.status, info.flush_succeeded) == ("failed", False)
    with pytest.raises(CleanupRefusedError):
        store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert store.project_keys() == {key("a"), key("b")}
