"""One cleanup per confirmed flush, and approvals of the plan an operator looked at (issue 21),
on both backends: the claim and the plan check hold in the store, across connections."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import build_sensor_context, instance_for_test

from enum_pipeline.definitions import defs
from enum_pipeline.defs.cleanup_notice import REQUESTED_BY_TAG
from enum_pipeline.defs.constants import cleanup_run_config
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.sensors import cleanup_after_confirmed_flush
from enum_pipeline.store import CleanupPolicy, CleanupRefusedError, PlanChangedError, StoreError
from enum_pipeline.store.claims import plan_id
from enum_pipeline_tests.helpers import (
    GONE,
    WorldWitness,
    enumerate_scopes,
    fail_on_sql,
    key,
    new_run_id,
    run_once,
    run_partition_tags_of,
)

NAMES = [f"p{i}" for i in range(6)]
#: Holds back a cleanup removing half a scope, however small.
STRICT = CleanupPolicy(fraction_min_scope_size=1)


def _emptied(store) -> str:
    """A first run sees every project, a second sees none: the second's cleanup is due."""
    run_once(store, {"fs:/srv/src": NAMES})
    run_id, _ = run_once(store, {"fs:/srv/src": []}, cleanup=False, policy=STRICT)
    return run_id


def test_a_blocked_plan_has_a_stable_id_and_only_that_plan_is_approved(store):
    run_id = _emptied(store)
    one_left = WorldWitness(present=[key("p0")])  # the first look finds one still there
    shown = store.safe_cleanup_old_projects(run_id, witness=one_left)
    assert shown.status == "blocked" and shown.would_remove == 5
    removed_keys = [key(n) for n in NAMES[1:]]
    assert shown.plan_id == plan_id(run_id, reversed(removed_keys))
    assert store.blocked_plan(run_id).plan_id == shown.plan_id
    assert store.cleanup_record(run_id).details["plan_id"] == shown.plan_id

    # the same plan shown again keeps its id; a look that finds p0 gone too makes a new plan
    again = store.safe_cleanup_old_projects(run_id, witness=WorldWitness(present=[key("p0")]))
    assert again.plan_id == shown.plan_id
    newer = store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert newer.status == "blocked" and newer.would_remove == 6
    assert newer.plan_id != shown.plan_id

    with pytest.raises(PlanChangedError) as refused:
        store.approve_cleanup(run_id, "operator", shown.plan_id)
    message = str(refused.value)
    assert (
        shown.plan_id in message and newer.plan_id in message and "nothing was approved" in message
    )
    assert store.cleanup_record(run_id).approved_by is None
    assert store.project_keys() == {key(n) for n in NAMES}

    approval = store.approve_cleanup(run_id, "operator", newer.plan_id)
    assert approval["plan_id"] == newer.plan_id and approval["approved_max"] == 6
    done = store.safe_cleanup_old_projects(run_id, approved_by="operator", witness=GONE)
    assert done.status == "done" and done.removed == 6 and done.plan_id is None
    assert store.blocked_plan(run_id) is None
    with pytest.raises(StoreError, match="no blocked cleanup to approve"):
        store.approve_cleanup(run_id, "operator", newer.plan_id)


class SlowWitness:
    """Confirms every candidate gone after a pause, so two cleanups overlap for real."""

    def __init__(self, pause: float) -> None:
        self.pause, self.asked = pause, 0

    def confirm(self, candidates):
        self.asked += 1
        time.sleep(self.pause)
        yield from GONE.confirm(candidates)


@pytest.mark.parametrize("outcome", ["done", "blocked"])
def test_two_cleanups_of_one_flush_at_once_one_runs_the_other_names_it(store, outcome):
    run_once(store, {"fs:/srv/src": NAMES})
    seen = NAMES[:5] if outcome == "done" else []
    run_id, _ = run_once(store, {"fs:/srv/src": seen}, cleanup=False, policy=STRICT)
    witness = SlowWitness(0.5)
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def cleanup(who: str) -> None:
        start.wait()
        results[who] = store.safe_cleanup_old_projects(run_id, witness=witness, claimant=who)

    threads = [threading.Thread(target=cleanup, args=(who,)) for who in ("sensor", "cli")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ran = [who for who, r in results.items() if not r.already_done]
    assert len(ran) == 1, results
    [first] = ran
    [second] = set(results) - {first}
    assert witness.asked == 1  # the second looked at nothing
    assert results[first].claimed_by == first and results[first].status == outcome
    noop = results[second]
    assert noop.claimed_by == first and noop.removed == 0
    assert noop.status == "noop" and "it has not ended yet" in noop.reason  # asked meanwhile
    assert f"is {first}'s" in noop.reason and "this request did nothing" in noop.reason
    assert store.cleanup_claim(run_id).claimed_by == first
    expected = {key(n) for n in seen} if outcome == "done" else {key(n) for n in NAMES}
    assert store.project_keys() == expected
    assert len(store.history(run_id)) == (1 if outcome == "done" else 0)

    # later, a third request (the sensor's next tick, another CLI) does nothing either
    third = store.safe_cleanup_old_projects(run_id, witness=GONE, claimant="operator")
    assert third.already_done and third.claimed_by == first
    assert third.status == outcome and f"it ended {outcome}" in third.reason  # what it recorded


def test_a_claim_is_given_back_when_its_cleanup_fails_before_recording(store):
    run_id = _emptied(store)
    with fail_on_sql(store, "INSERT INTO cleanups"), pytest.raises(RuntimeError):
        store.safe_cleanup_old_projects(run_id, witness=GONE, claimant="crashing")
    assert store.cleanup_claim(run_id) is None
    result = store.safe_cleanup_old_projects(run_id, witness=GONE, claimant="next")
    assert not result.already_done and result.claimed_by == "next"
    assert result.status == "blocked"


def test_a_run_that_did_not_complete_cannot_be_claimed(store):
    run_id = new_run_id()
    store.begin(run_id)
    with pytest.raises(CleanupRefusedError, match="only a completed, flush-verified run"):
        store.safe_cleanup_old_projects(run_id, witness=GONE, claimant="sensor")
    assert store.cleanup_claim(run_id) is None


def test_a_dry_run_claims_nothing(store):
    run_id = _emptied(store)
    dry = store.safe_cleanup_old_projects(run_id, witness=GONE, dry_run=True, claimant="x")
    assert dry.dry_run and dry.claimed_by is None and store.cleanup_claim(run_id) is None


@pytest.fixture
def dagster_env(db_url, repo_tree, monkeypatch):
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", str(repo_tree))
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)
    with instance_for_test() as instance:
        yield instance


def test_the_sensor_requests_no_cleanup_of_a_flush_the_cli_claimed(dagster_env):
    """``enum-pipeline run`` cleans up right after its run: the sensor's next tick skips that
    flush, naming the CLI's Dagster run; a cleanup run requested anyway is a no-op naming it."""
    instance = dagster_env
    run = enumerate_scopes(instance)
    assert run.success
    partition = run_partition_tags_of(instance, run.run_id)
    cleanup = defs.resolve_job_def("cleanup_projects")
    cli = cleanup.execute_in_process(
        instance=instance,
        run_config=cleanup_run_config(run.run_id),
        tags={REQUESTED_BY_TAG: "enum-pipeline run", **partition},
    )
    assert cli.output_for_node("stale_projects_cleanup")["claimed_by"] == (
        f"dagster run {cli.run_id} (enum-pipeline run)"
    )
    tick = cleanup_after_confirmed_flush.evaluate_tick(
        build_sensor_context(instance=instance, resources={"inventory": InventoryResource()})
    )
    assert tick.run_requests == []
    assert f"claimed by dagster run {cli.run_id} (enum-pipeline run)" in tick.skip_message

    late = cleanup.execute_in_process(
        instance=instance, run_config=cleanup_run_config(run.run_id), tags=partition
    )
    data = late.output_for_node("stale_projects_cleanup")
    assert data["already_done"] and data["removed"] == 0
    assert f"dagster run {cli.run_id} (enum-pipeline run)'s" in data["reason"]
    [mat] = late.asset_materializations_for_node("stale_projects_cleanup")
    assert mat.metadata["claimed_by"].value == f"dagster run {cli.run_id} (enum-pipeline run)"
