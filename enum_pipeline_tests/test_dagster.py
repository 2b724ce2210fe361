"""The Dagster wiring on real instances, real git trees and both database backends."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    DagsterInvalidSubsetError,
    ReexecutionOptions,
    RunRequest,
    UrlMetadataValue,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    instance_for_test,
    reconstructable,
)

from enum_pipeline.definitions import defs
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG, cleanup_run_config
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.sensors import (
    cleanup_after_confirmed_flush,
    mark_failed_enumeration_runs,
    reap_abandoned_runs,
)
from enum_pipeline.store import InventoryStore
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import (
    clear_faults,
    configured_scopes,
    enumerate_scopes,
    install_fault,
    run_partition_tags_of,
    scope_partitions,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _enumerate(instance: DagsterInstance):
    return enumerate_scopes(instance)


def _cleanup(instance: DagsterInstance, job: str, of_run, **kwargs):
    """``job`` (a cleanup job) for the partition of enumeration result ``of_run`` (one: a job's
    own config applies to a partition given as such, as the launchpad does)."""
    [key] = run_partition_tags_of(instance, of_run.run_id).values()
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=key, **kwargs
    )


def _latest_flush_metadata(instance: DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(AssetKey("projects"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _sensor_tick(instance, cursor=None):
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"inventory": InventoryResource()}
    )
    return cleanup_after_confirmed_flush.evaluate_tick(context)


def test_enumerate_projects_materializes_a_real_git_tree(env, instance, repo_tree):
    result = _enumerate(instance)
    assert result.success
    names = {r["name"] for r in env.projects()}
    assert names == {"alpha", "beta", "gamma", "delta", "epsilon"}
    meta = _latest_flush_metadata(instance)
    assert meta["flush_succeeded"] is True
    assert meta["run_id"] == result.run_id
    assert meta["added"] == 5 and meta["dagster/row_count"] == 5
    info = env.get_run(result.run_id)
    assert (info.status, info.flush_succeeded, info.generation) == ("completed", True, 1)
    checks = result.get_asset_check_evaluations()
    assert {c.check_name: c.passed for c in checks} == {
        "projects_flush_verified": True,
        "projects_scopes_complete": True,
        "scope_health": True,
    }
    added = meta["added_and_changed"]
    assert sorted((r.data["change"], r.data["name"]) for r in added.records) == [
        ("added", n) for n in sorted(names)
    ]
    scopes = meta["scopes"]
    assert [(r.data["total"], r.data["incomplete"]) for r in scopes.records] == [(5, False)]
    alpha = next(r for r in env.projects() if r["name"] == "alpha")
    assert "pyproject.toml" in alpha["markers"] and len(alpha["head_commit"]) == 40


def test_sensor_requests_exactly_one_cleanup_for_a_confirmed_flush(env, instance, repo_tree):
    result = _enumerate(instance)
    first = _sensor_tick(instance)
    assert [r.run_key for r in first.run_requests] == [result.run_id]
    request: RunRequest = first.run_requests[0]
    assert request.run_config == cleanup_run_config(result.run_id)
    assert (
        request.tags.items()
        >= {
            ENUMERATION_RUN_TAG: result.run_id,
            **run_partition_tags_of(instance, result.run_id),
        }.items()
    )
    again = _sensor_tick(instance, cursor=first.cursor)
    assert again.run_requests == [] and "already handled" in again.skip_message
    cleanup = defs.resolve_job_def("cleanup_projects").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags
    )
    assert cleanup.output_for_node("stale_projects_cleanup")["status"] == "noop"


def test_sensor_requests_nothing_for_a_failed_flush(env, instance, db_url):
    install_fault(db_url, "lose_write", name="beta")
    result = _enumerate(instance)
    assert not result.success
    meta = _latest_flush_metadata(instance)
    assert meta["flush_succeeded"] is False and "staged 5" in meta["error"]
    tick = _sensor_tick(instance)
    assert tick.run_requests == []
    assert f"flush of run {result.run_id} was not confirmed" in tick.skip_message
    info = env.get_run(result.run_id)
    assert info.status == "failed" and "verification" in info.error
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["projects_flush_verified"] is False


def test_sensor_skips_while_no_flush_exists(env, instance):
    tick = _sensor_tick(instance)
    assert tick.run_requests == [] and "no flush" in tick.skip_message


def test_failed_upsert_fails_the_dagster_run_and_keeps_projects(env, instance, db_url, repo_tree):
    assert _enumerate(instance).success
    handled = _sensor_tick(instance)
    assert len(handled.run_requests) == 1
    shutil.rmtree(repo_tree / "gamma")
    install_fault(db_url, "abort_upsert")
    result = _enumerate(instance)
    assert not result.success
    info = env.get_run(result.run_id)
    assert info.status == "failed" and "injected: disk full" in info.error
    assert len(env.project_keys()) == 5
    tick = _sensor_tick(instance, cursor=handled.cursor)
    assert tick.run_requests == []  # the failed run never produced a flush materialization
    assert "already handled" in tick.skip_message


def test_run_failure_sensor_marks_run_state_failed(env, instance, db_url):
    install_fault(db_url, "abort_upsert")
    result = _enumerate(instance)
    assert not result.success
    # As if the process died before its own except-block ran: the row is still active.
    with env.engine.begin() as conn:
        conn.execute(
            t.run_state.update()
            .where(t.run_state.c.run_id == result.run_id)
            .values(status="active", error=None)
        )
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = build_run_status_sensor_context(
        sensor_name="mark_failed_enumeration_runs",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"inventory": InventoryResource()},
    ).for_run_failure()
    mark_failed_enumeration_runs(context)
    info = env.get_run(result.run_id)
    assert info.status == "failed" and info.error.startswith("dagster run failed")


def test_reaper_marks_a_run_whose_dagster_run_ended(env, instance):
    result = _enumerate(instance)
    with env.engine.begin() as conn:
        conn.execute(
            t.run_state.update()
            .where(t.run_state.c.run_id == result.run_id)
            .values(status="active", pid=None)
        )
    context = build_sensor_context(instance=instance, resources={"inventory": InventoryResource()})
    tick = reap_abandoned_runs.evaluate_tick(context)
    assert result.run_id in tick.skip_message
    assert env.get_run(result.run_id).status == "failed"


def test_cleanup_removes_a_deleted_repository(env, instance, repo_tree):
    _enumerate(instance)
    shutil.rmtree(repo_tree / "beta")
    second = _enumerate(instance)
    cleanup = _cleanup(
        instance, "cleanup_projects", second, run_config=cleanup_run_config(second.run_id)
    )
    data = cleanup.output_for_node("stale_projects_cleanup")
    assert data["status"] == "done" and data["removed"] == 1
    assert "beta" not in {r["name"] for r in env.projects()}
    assert [h.row["name"] for h in env.history(second.run_id)] == ["beta"]
    restore = defs.resolve_job_def("restore_projects").execute_in_process(
        instance=instance,
        run_config={"ops": {"restore_removed_projects": {"config": {"run_id": second.run_id}}}},
    )
    assert len(restore.output_for_node("restore_removed_projects")) == 1
    assert "beta" in {r["name"] for r in env.projects()}


def _latest_projects_metadata(instance: DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(AssetKey("projects"))
    return event.asset_materialization.metadata


def _table_names(value) -> list[str]:
    return [record.data["name"] for record in value.records]


def test_blocked_cleanup_fails_its_run_in_one_sentence_and_its_link_approves_that_plan(
    env, instance, repo_tree
):
    _enumerate(instance)
    for child in repo_tree.iterdir():
        shutil.rmtree(child)
    second = _enumerate(instance)
    flush = _latest_flush_metadata(instance)
    assert flush["dagster/table_name"] == "projects"
    assert "project_key" in {c.name for c in flush["dagster/column_schema"].columns}
    blocked = _cleanup(
        instance,
        "cleanup_projects",
        second,
        run_config=cleanup_run_config(second.run_id),
        raise_on_error=False,
    )
    assert not blocked.success  # recorded, then failed: not a green success
    data = blocked.output_for_node("stale_projects_cleanup")
    assert (data["status"], data["removed"], data["would_remove"]) == ("blocked", 0, 5)
    plan_id = data["plan_id"]
    [check] = blocked.get_asset_check_evaluations()
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert "would remove 5" in check.description and f"approve plan {plan_id}" in check.description
    assert blocked.run_id in check.description and second.run_id in check.description
    # The run fails on one sentence (a Failure's description) with the approve link beside it.
    [failure] = [e for e in blocked.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    assert user.description.startswith(f"Cleanup of run {second.run_id} held back")
    assert failure.step_failure_data.error.message.strip().endswith(user.description)
    link = user.metadata["approve"].value
    assert isinstance(user.metadata["approve"], UrlMetadataValue)
    [mat] = blocked.asset_materializations_for_node("stale_projects_cleanup")
    assert mat.metadata["removed"].value == 0
    assert sorted(_table_names(mat.metadata["projects"].value)) == sorted(
        ["alpha", "beta", "gamma", "delta", "epsilon"]
    )
    assert {r.data["action"] for r in mat.metadata["projects"].value.records} == {"remove"}
    assert mat.metadata["approve"].value == link and mat.metadata["plan_id"].value == plan_id
    assert len(env.project_keys()) == 5

    # approve_cleanup launched bare approves nothing: it names the pending plan instead
    bare = _cleanup(instance, "approve_cleanup", second, raise_on_error=False)
    assert not bare.success
    [refused] = [e for e in bare.all_events if e.is_step_failure]
    assert f"plan {plan_id} of run {second.run_id}" in refused.step_failure_data.error.message
    assert len(env.project_keys()) == 5
    # the link's launchpad config approves exactly the plan shown
    [config_yaml] = parse_qs(urlparse(link).query)["config"]
    approved = _cleanup(instance, "approve_cleanup", second, run_config=yaml.safe_load(config_yaml))
    assert approved.success
    assert approved.output_for_node("stale_projects_cleanup")["removed"] == 5
    [done] = approved.asset_materializations_for_node("stale_projects_cleanup")
    [restorable] = done.metadata["restorable"].value.records
    assert (restorable.data["cleanup_of_run"], restorable.data["removed"]) == (second.run_id, 5)
    assert env.project_keys() == set()
    assert _latest_projects_metadata(instance)["dagster/row_count"].value == 0

    restore = defs.resolve_job_def("restore_projects")
    wrong = restore.execute_in_process(
        instance=instance,
        run_config={"ops": {"restore_removed_projects": {"config": {"run_id": "nope"}}}},
        raise_on_error=False,
    )
    assert not wrong.success
    [failure] = [e for e in wrong.all_events if e.is_step_failure]
    assert second.run_id in failure.step_failure_data.error.message
    # The cleanup's own Dagster run id is accepted as well as the enumeration run's.
    back = restore.execute_in_process(
        instance=instance,
        run_config={"ops": {"restore_removed_projects": {"config": {"run_id": approved.run_id}}}},
    )
    assert len(back.output_for_node("restore_removed_projects")) == 5
    assert len(env.project_keys()) == 5
    assert _latest_projects_metadata(instance)["dagster/row_count"].value == 5


def test_the_enumeration_cannot_be_split(env, instance):
    """Selecting one of its three assets selects the three (the UI does so), else refuses
    before a run begins."""
    tags = scope_partitions(instance, configured_scopes())
    job = defs.resolve_implicit_global_asset_job_def()
    for key in ("scanned_projects", "projects", "run_state"):
        with pytest.raises(DagsterInvalidSubsetError):
            job.execute_in_process(instance=instance, asset_selection=[AssetKey(key)], tags=tags)
    assert env.runs() == []


def _enumerate_job():
    return defs.resolve_job_def("enumerate_projects")


def test_reexecution_from_failure_finishes_the_flush_without_rescanning(env, db_url, repo_tree):
    with instance_for_test() as instance:
        install_fault(db_url, "abort_upsert")
        tags = scope_partitions(instance, configured_scopes())
        with execute_job(reconstructable(_enumerate_job), instance=instance, tags=tags) as first:
            assert not first.success
        assert env.get_run(first.run_id).status == "failed"
        clear_faults(db_url)
        (repo_tree / "zeta").mkdir()  # appears after the scan: a re-scan would see it
        subprocess.run(["git", "init", "-q", str(repo_tree / "zeta")], check=True)
        options = ReexecutionOptions.from_failure(first.run_id, instance)
        with execute_job(  # the partition's tags, as the UI's re-execution copies them
            reconstructable(_enumerate_job),
            instance=instance,
            reexecution_options=options,
            tags=tags,
        ) as second:
            assert second.success
            executed = {e.step_key for e in second.all_events if e.is_step_success}
        assert "enumeration.scanned_projects" not in executed
        assert "enumeration.upsert_projects" in executed
        info = env.get_run(first.run_id)
        assert info.status == "completed" and info.attempt_run_id == second.run_id
        assert "zeta" not in {r["name"] for r in env.projects()}
        assert len(env.project_keys()) == 5


@pytest.mark.parametrize(
    "command",
    [
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "enum_pipeline.definitions",
        ],
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
    ],
    ids=["dagster-validate", "dg-check-defs"],
)
def test_definitions_load_through_the_cli(command, tmp_path):
    proc = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={
            "PATH": str(Path(sys.executable).parent),
            "DAGSTER_HOME": str(tmp_path),
            "HOME": str(tmp_path),
        },
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cleanup_job():
    return defs.resolve_job_def("cleanup_projects")


@pytest.mark.parametrize("breakage", ["broken", "absent"])
def test_blocked_cleanup_stays_blocked_from_the_sensor_and_the_launchpad_when_config_breaks(
    db_url, repo_tree, tmp_path, monkeypatch, breakage
):
    """The policy the run began with (max_delete_count=1) holds the cleanup back however it is
    requested, even when the configuration is broken or gone by then (the defaults would let
    it through)."""
    config = tmp_path / "enum.yaml"
    config.write_text(
        f"sources:\n  - kind: filesystem\n    roots: [{repo_tree}]\n"
        "cleanup:\n  max_delete_count: 1\n"
    )
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_CONFIG", str(config))
    monkeypatch.delenv("ENUM_PIPELINE_ROOTS", raising=False)
    store = InventoryStore(db_url)
    with instance_for_test() as instance:
        assert _enumerate(instance).success
        shutil.rmtree(repo_tree / "beta")
        shutil.rmtree(repo_tree / "gamma")
        second = _enumerate(instance)
        assert second.success
        if breakage == "broken":
            config.write_text("sources: [\n")
        else:
            config.unlink()
        tick = _sensor_tick(instance)
        assert [r.run_key for r in tick.run_requests] == [second.run_id]
        request = tick.run_requests[0]
        requested = _cleanup_job().execute_in_process(
            instance=instance,
            run_config=request.run_config,
            tags=request.tags,
            raise_on_error=False,
        )
        assert not requested.success  # a blocked cleanup fails its run, after recording it
        data = requested.output_for_node("stale_projects_cleanup")
        assert (data["status"], data["removed"], data["would_remove"]) == ("blocked", 0, 2)
        assert "max_delete_count=1" in data["reason"]
        launchpad = cleanup_run_config(second.run_id, config_path=str(config))
        with execute_job(
            reconstructable(_cleanup_job),
            instance=instance,
            run_config=launchpad,
            tags=request.tags,
        ) as result:
            assert not result.success
            (event,) = result.asset_materializations_for_node("stale_projects_cleanup")
        meta = {k: v.value for k, v in event.metadata.items()}
        assert (meta["status"], meta["removed"], meta["would_remove"]) == ("blocked", 0, 2)
        assert len(store.project_keys()) == 5
        entries = store.cleanup_entries(second.run_id)
        assert sorted(e.name for e in entries if e.action == "remove") == ["beta", "gamma"]
    store.dispose()


def test_accept_scope_identity_and_prune_orphans_jobs(env, instance):
    from enum_pipeline_tests.helpers import SCOPE, key, run_verdicts

    other = "fs:/srv/other"
    run_verdicts(env, {SCOPE: ["a", "b"]}, verdicts={SCOPE: {"identity": {"st_dev": 1}}})
    held, _ = run_verdicts(
        env,
        {SCOPE: ["a"], other: ["x"]},
        verdicts={SCOPE: {"identity": {"st_dev": 2}}},
        configured=[SCOPE, other],
    )
    accepted = defs.resolve_job_def("accept_scope_identity").execute_in_process(
        instance=instance, run_config={"ops": {"accept_identity": {"config": {"scope_key": SCOPE}}}}
    )
    assert accepted.output_for_node("accept_identity")["run_id"] == held
    assert env.scopes(held)[1].identity_accepted_by == f"dagster run {accepted.run_id}"
    run_verdicts(env, {SCOPE: ["a", "b"]}, configured=[SCOPE])
    assert key("x", other) in {r["project_key"] for r in env.kept_projects()}
    job = defs.resolve_job_def("prune_orphans")
    ops = {"prune_orphaned_projects": {"config": {}}}
    blocked = job.execute_in_process(instance=instance, run_config={"ops": ops})
    assert blocked.output_for_node("prune_orphaned_projects")["status"] == "blocked"
    ops["prune_orphaned_projects"]["config"]["approve"] = True
    done = job.execute_in_process(instance=instance, run_config={"ops": ops})
    data = done.output_for_node("prune_orphaned_projects")
    assert (data["status"], data["removed"]) == ("done", 1)
    assert key("x", other) not in env.project_keys()
    assert [h.project_key for h in env.history(data["run_id"])] == [key("x", other)]
