"""A scope is a partition: runs of one scope, of a range in one run, Materialize all, the
partition sync sensor, the schedule, a failing scope re-run alone, a held scope per partition
(real git trees, real Dagster instances, both database backends)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    build_schedule_context,
    build_sensor_context,
    execute_job,
)
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from enum_pipeline import cli
from enum_pipeline.cli.commands_run import _one_run_over
from enum_pipeline.config import ConfigError, parse_config
from enum_pipeline.definitions import defs
from enum_pipeline.defs.constants import SCOPES_PARTITIONS
from enum_pipeline.defs.placement import scope_run_tags
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.schedules import enumerate_projects_schedule
from enum_pipeline.defs.scopes import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    SCOPES,
    partition_key,
    scope_key,
)
from enum_pipeline.defs.sensors import sync_scope_partitions
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.helpers import (
    clear_faults,
    enumerate_scopes,
    install_fault,
    make_repo,
    run_partition_tags_of,
    scope_partitions,
)

RESOURCES = {"inventory": InventoryResource()}


def _scope(root: Path) -> str:
    return FilesystemSource.scope_key_for(str(root))


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    """Three roots of two repositories each."""
    made = []
    for name in ("a", "b", "c"):
        root = tmp_path / name
        make_repo(root / f"{name}1", commit=False)
        make_repo(root / f"{name}2", commit=False)
        made.append(root)
    return made


def _configure(path: Path, roots: list[Path]) -> None:
    listed = ", ".join(map(str, roots))
    path.write_text(f"sources:\n  - kind: filesystem\n    roots: [{listed}]\n")


@pytest.fixture
def config(tmp_path: Path, roots: list[Path]) -> Path:
    """The configuration file: the three roots."""
    path = tmp_path / "enum.yaml"
    _configure(path, roots)
    return path


@pytest.fixture
def env(db_url, config, monkeypatch):
    """The code location on a fresh database, configured by ``config``."""
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_CONFIG", str(config))
    monkeypatch.delenv("ENUM_PIPELINE_ROOTS", raising=False)
    store = InventoryStore(db_url)
    yield store
    store.dispose()


def _names(store: InventoryStore) -> set[str]:
    return {r["name"] for r in store.projects()}


def _status(instance: DagsterInstance, asset: str, keys: list[str]) -> dict:
    return dict(instance.get_status_by_partition(AssetKey(asset), keys, SCOPES))


def _health(result) -> dict[str, tuple[bool, str | None]]:
    return {
        e.partition: (e.passed, e.description)
        for e in result.get_asset_check_evaluations()
        if e.check_name == "scope_health" and e.partition is not None
    }


def test_keys_are_scope_keys_except_the_ui_syntax():
    for key in ("fs:/srv/git", "github:github.com/acme"):
        assert partition_key(key) == key
    odd = "fs:/data/a,b/[x]/.../100%"
    assert not any(s in partition_key(odd) for s in (",", "[", "]", "..."))
    assert scope_key(partition_key(odd)) == odd


def test_one_partition_reads_only_its_scope(env, instance, roots):
    result = enumerate_scopes(instance, [_scope(roots[0])])
    assert result.success
    assert _names(env) == {"a1", "a2"}
    [run] = env.runs()
    assert [s.scope_key for s in env.scopes(run.run_id)] == [_scope(roots[0])]
    keys = [partition_key(_scope(r)) for r in roots]
    status = _status(instance, "projects", keys)
    assert status[keys[0]] == AssetPartitionStatus.MATERIALIZED
    assert status[keys[1]] is None and status[keys[2]] is None
    assert _health(result) == {keys[0]: (True, None)}


def test_a_range_is_one_run_over_its_scopes(env, instance, roots):
    result = enumerate_scopes(instance)  # every configured scope: one range
    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    keys = [partition_key(_scope(r)) for r in roots]
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (keys[0], keys[-1])
    assert _names(env) == {"a1", "a2", "b1", "b2", "c1", "c2"}
    [run] = env.runs()  # one inventory run, one generation, for the three scopes
    assert sorted(s.scope_key for s in env.scopes(run.run_id)) == sorted(map(_scope, roots))
    for asset in ("scanned_projects", "projects", "run_state"):
        assert set(_status(instance, asset, keys).values()) == {AssetPartitionStatus.MATERIALIZED}
    assert _health(result) == {k: (True, None) for k in keys}


def test_a_partition_the_configuration_lacks_fails_before_anything_begins(env, instance):
    result = enumerate_scopes(instance, ["fs:/nowhere"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "scope fs:/nowhere is not in" in message and "nothing was begun" in message
    assert env.runs() == []


def test_materialize_all_runs_the_implicit_asset_job_in_process(env, instance, roots):
    """What the UI's Materialize all (and an asset page, lineage, a backfill) launches: the
    implicit asset job, with its own executor, through a real launch (not execute_in_process,
    which would force the in-process executor anyway)."""
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"
    tags = scope_partitions(instance, [_scope(r) for r in roots])
    location = ReconstructableRepository.for_module("enum_pipeline.definitions", "defs")
    job = location.get_reconstructable_job(IMPLICIT_ASSET_JOB_NAME)
    with execute_job(job, instance=instance, tags=tags) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"scanned_projects", "projects", "run_state", "stale_projects_cleanup"} <= done
    assert len(_names(env)) == 6
    [run] = env.runs()
    assert env.cleanup_record(run.run_id).status in ("noop", "done")


def _sync_tick(instance: DagsterInstance):
    context = build_sensor_context(instance=instance, resources=RESOURCES)
    return sync_scope_partitions.evaluate_tick(context)


def _apply(instance: DagsterInstance, tick) -> None:
    for request in tick.dynamic_partitions_requests:
        if type(request).__name__ == "AddDynamicPartitionsRequest":
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_the_sync_sensor_keeps_partitions_in_step_and_a_dropped_scope_loses_no_project(
    env, instance, roots, config
):
    keys = [partition_key(_scope(r)) for r in roots]
    first = _sync_tick(instance)
    [add] = first.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == (SCOPES_PARTITIONS, keys)
    _apply(instance, first)
    assert "match the configuration" in _sync_tick(instance).skip_message
    assert enumerate_scopes(instance).success
    # roots[2] leaves the configuration: its partition goes, its projects stay (orphans)
    _configure(config, roots[:2])
    dropped = _sync_tick(instance)
    [delete] = dropped.dynamic_partitions_requests
    assert list(delete.partition_keys) == [keys[2]]
    _apply(instance, dropped)
    assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == keys[:2]
    second = enumerate_scopes(instance)
    assert second.success
    cleanup = defs.resolve_job_def("cleanup_projects").execute_in_process(
        instance=instance, tags=run_partition_tags_of(instance, second.run_id)
    )
    assert cleanup.output_for_node("stale_projects_cleanup")["removed"] == 0
    assert {"c1", "c2"} <= _names(env)
    # a configuration that cannot be read changes no partition
    config.write_text("sources: [\n")
    broken = _sync_tick(instance)
    assert broken.dynamic_partitions_requests == [] and "left as they are" in broken.skip_message


def test_the_schedule_launches_one_run_per_scope_with_its_queue_tags(env, instance, roots):
    context = build_schedule_context(
        instance=instance,
        resources=RESOURCES,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    requests = enumerate_projects_schedule.evaluate_tick(context).run_requests
    keys = [partition_key(_scope(r)) for r in roots]
    assert [r.partition_key for r in requests] == keys
    assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == keys  # added as it asked
    for root, request in zip(roots, requests, strict=True):
        source = FilesystemSource(roots=[str(root)])
        assert request.tags.items() >= scope_run_tags(source, _scope(root)).items()
        assert request.tags[PARTITION_TAG] == partition_key(_scope(root))


def test_a_failing_scope_shows_failed_and_is_rerun_alone(env, instance, roots, db_url):
    keys = [partition_key(_scope(r)) for r in roots[:2]]
    install_fault(db_url, "abort_upsert")
    failed = enumerate_scopes(instance, [_scope(roots[0])])
    assert not failed.success
    clear_faults(db_url)
    assert enumerate_scopes(instance, [_scope(roots[1])]).success
    status = _status(instance, "projects", keys)
    assert status == {
        keys[0]: AssetPartitionStatus.FAILED,
        keys[1]: AssetPartitionStatus.MATERIALIZED,
    }
    assert _names(env) == {"b1", "b2"}
    again = enumerate_scopes(instance, [_scope(roots[0])])  # the failed partition alone
    assert again.success
    assert instance.get_run_by_id(again.run_id).tags[PARTITION_TAG] == keys[0]
    assert set(_status(instance, "projects", keys).values()) == {AssetPartitionStatus.MATERIALIZED}
    assert _names(env) == {"a1", "a2", "b1", "b2"}


def test_an_incomplete_scope_is_unhealthy_in_its_partition_only(env, instance, roots, tmp_path):
    keys = [partition_key(_scope(r)) for r in roots]
    assert enumerate_scopes(instance).success
    shutil.move(roots[1], tmp_path / "moved-away")
    result = enumerate_scopes(instance)
    assert result.success  # an incomplete scope keeps its projects; the run completes
    health = _health(result)
    assert health[keys[0]] == (True, None) and health[keys[2]] == (True, None)
    passed, why = health[keys[1]]
    assert not passed and why.startswith("incomplete")
    assert {"b1", "b2"} <= _names(env)


def test_the_cli_makes_one_range_of_its_scopes(instance):
    """Configured: the partitions become its scopes, one range. Ad hoc: its keys are added;
    keys not contiguous in the partitions' order are added again, together, at the end."""
    instance.add_dynamic_partitions(SCOPES_PARTITIONS, ["fs:/old"])
    tags = _one_run_over(instance, ["fs:/a", "fs:/b"], ad_hoc=False)
    assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == ["fs:/a", "fs:/b"]
    assert tags == {RANGE_START_TAG: "fs:/a", RANGE_END_TAG: "fs:/b"}
    assert _one_run_over(instance, ["fs:/c"], ad_hoc=True) == {PARTITION_TAG: "fs:/c"}
    tags = _one_run_over(instance, ["fs:/a", "fs:/c"], ad_hoc=True)
    assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == ["fs:/b", "fs:/a", "fs:/c"]
    assert tags == {RANGE_START_TAG: "fs:/a", RANGE_END_TAG: "fs:/c"}
    partitions = DynamicPartitionsDefinition(name=SCOPES_PARTITIONS)
    assert partitions.get_partition_keys(dynamic_partitions_store=instance) == [
        "fs:/b",
        "fs:/a",
        "fs:/c",
    ]


def test_narrowing_keeps_only_the_given_scopes_and_refuses_an_unknown_one(tmp_path):
    roots = [str(tmp_path / n) for n in ("a", "b", "c")]
    config = parse_config(
        {
            "sources": [
                {"kind": "filesystem", "roots": roots},
                {"kind": "github", "owner": "acme"},
            ]
        },
        "enum.yaml",
    )
    every = [k for s in config.build_sources() for k in s.scope_keys()]
    assert len(every) == 4
    wanted = [every[1], every[3]]  # one root of the filesystem source, and the org
    narrowed = config.sources_for(wanted)
    assert [k for s in narrowed for k in s.scope_keys()] == wanted
    with pytest.raises(ConfigError, match=r"^scope fs:/nowhere is not in enum.yaml .*begun$"):
        config.sources_for([every[0], "fs:/nowhere"])


def test_enum_pipeline_run_is_one_run_over_every_scope(env, roots, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["run", "--no-reports"]) == 0
    [run] = env.runs()
    assert sorted(s.scope_key for s in env.scopes(run.run_id)) == sorted(map(_scope, roots))
    keys = [partition_key(_scope(r)) for r in roots]
    with DagsterInstance.from_config(str(home)) as instance:
        tags = instance.get_run_by_id(run.run_id).tags
        assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (keys[0], keys[-1])
        assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == keys


def test_the_approve_link_opens_the_launchpad_on_the_cleanups_partition():
    from urllib.parse import parse_qs, urlsplit

    from enum_pipeline.defs.cleanup_notice import approve_link

    query = parse_qs(urlsplit(approve_link("r1", "p1", tags={PARTITION_TAG: "fs:/a"})).query)
    assert query["tags[0][key]"] == [PARTITION_TAG] and query["tags[0][value]"] == ["fs:/a"]
    assert "approve: true" in query["config"][0] and "r1" in query["config"][0]
