"""The step layer: one rule for "cleanup due", and the couplings that keep a run's holder alive."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    execute_job,
    instance_for_test,
    multiprocess_executor,
    reconstructable,
)

from enum_pipeline import steps
from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.store import InventoryStore
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import (
    SCOPE,
    StaticSource,
    new_run_id,
    rec,
    run_once,
    scope_partitions,
)


def test_cleanup_due_is_one_rule_for_every_state_of_a_run(store):
    unknown = steps.cleanup_due(store, "nope")
    assert not unknown.due and "unknown" in unknown.reason

    active = new_run_id()
    steps.start_run(store, active, [])
    waiting = steps.cleanup_due(store, active)
    assert (waiting.due, waiting.wait) == (False, True)
    steps.fail_run(store, active, "scan failed: test")
    failed = steps.cleanup_due(store, active)
    assert (failed.due, failed.wait) == (False, False)
    assert f"flush of run {active} was not confirmed (scan failed: test)" in failed.reason

    done, _ = run_once(store, {SCOPE: ["a"]}, cleanup=False)
    assert steps.cleanup_due(store, done).due


def test_a_step_in_a_process_that_does_not_hold_the_run_fails_it(store):
    """The run was begun elsewhere (here: without the step layer's holder, as a step run by
    another executor's process would find it): the flush refuses and fails the run."""
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a")])
    with pytest.raises(steps.StepProcessError, match="in-process executor"):
        steps.flush_run(store, run_id)
    assert store.get_run(run_id).status == "failed"
    assert store.project_keys() == set()


def test_finish_keeps_the_staging_of_the_newest_runs(store):
    assert steps.STAGING_RUNS_KEPT >= 2
    ids = [run_once(store, {SCOPE: ["a", "b"]}, cleanup=False)[0] for _ in range(4)]
    staged = {r: store.get_run(r).staged_count for r in ids}
    assert all(n == 2 for n in staged.values())
    with store.engine.connect() as conn:
        kept = set(conn.execute(sa.select(t.staged_projects.c.run_id).distinct()).scalars())
    assert kept == set(ids[-steps.STAGING_RUNS_KEPT :])


def test_run_through_stages_what_a_source_yields(store):
    source = StaticSource({SCOPE: ([rec("a"), rec("b")], ScopeVerdict(SCOPE, "filesystem", True))})
    summary, verified, finished = steps.run_through(store, new_run_id(), [source])
    assert (summary.staged, verified.confirmed, finished.status) == (2, 2, "completed")


def _multiprocess_enumeration():
    """The enumeration's assets in a job whose steps each run in a process of their own."""
    from enum_pipeline.defs.enumeration import enumeration
    from enum_pipeline.defs.resources import InventoryResource

    job = define_asset_job(
        "enumerate_projects_multiprocess",
        selection=AssetSelection.assets(enumeration),
        executor_def=multiprocess_executor,
    )
    return Definitions(
        assets=[enumeration],
        jobs=[job],
        resources={"inventory": InventoryResource()},
    ).resolve_job_def(job.name)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_enumeration_refuses_another_executor_before_it_begins(db_url, repo_tree, monkeypatch):
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", str(repo_tree))
    job = reconstructable(_multiprocess_enumeration)
    with instance_for_test() as instance:
        tags = scope_partitions(instance, [FilesystemSource.scope_key_for(str(repo_tree))])
        with execute_job(job, instance=instance, tags=tags) as result:
            assert not result.success
            errors = [
                e.step_failure_data.error.message
                for e in result.all_events
                if e.is_step_failure and e.step_failure_data
            ]
    assert any("must run under the in-process executor" in m for m in errors), errors
    store = InventoryStore(db_url)
    assert store.runs() == []  # refused before begin: nothing to clean up after
    store.dispose()
