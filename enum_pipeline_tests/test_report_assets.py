"""The pandas report assets materialized through Dagster after a real enumeration of real
checkouts and a fake GitHub organisation, on both backends; their metadata checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    RunsFilter,
    build_sensor_context,
    instance_for_test,
)

from enum_pipeline.definitions import defs
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG
from enum_pipeline.defs.reports import reports_after_enumeration
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.store import InventoryStore
from enum_pipeline.store.query import OUTPUT_COLUMNS
from enum_pipeline_tests.fake_codehosts import FakeCodeHost
from enum_pipeline_tests.helpers import enumerate_scopes, make_repo
from enum_pipeline_tests.product_fixtures import github_app, make_tree, write_config

REPORTS = ["inventory_frame", "inventory_summary", "clone_coverage", "inventory_export"]


@pytest.fixture
def enumerated(db_url, tmp_path, monkeypatch):
    """A completed enumeration of the product tree; yields (instance, enumeration result)."""
    with FakeCodeHost(github_app()) as host:
        config = write_config(tmp_path, make_tree(tmp_path), host.url)
        monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
        monkeypatch.setenv("ENUM_PIPELINE_CONFIG", str(config))
        monkeypatch.delenv("ENUM_PIPELINE_ROOTS", raising=False)
        with instance_for_test() as instance:
            result = enumerate_scopes(instance)
            assert result.success
            yield instance, result
    InventoryStore(db_url).dispose()


def _materialize(
    instance: DagsterInstance,
    keys: list[str],
    run_config: dict | None = None,
    tags: dict | None = None,
):
    job = defs.resolve_job_def("inventory_reports")
    return job.execute_in_process(
        instance=instance,
        asset_selection=[AssetKey(k) for k in keys],
        run_config=run_config or {},
        tags=tags,
    )


def _meta(instance: DagsterInstance, key: str) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(key))
    assert event is not None, f"{key} was not materialized"
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_report_assets_materialize_with_their_metadata(enumerated, tmp_path):
    instance, _ = enumerated
    export = tmp_path / "inventory.parquet"
    result = _materialize(
        instance,
        REPORTS,
        {"ops": {"inventory_export": {"config": {"path": str(export), "format": "parquet"}}}},
    )
    assert result.success

    frame = _meta(instance, "inventory_frame")
    assert frame["dagster/row_count"] == 8
    assert [c.name for c in frame["dagster/column_schema"].columns] == list(OUTPUT_COLUMNS)
    df = result.output_for_node("inventory_frame")
    assert len(df) == 8 and list(df.columns) == list(OUTPUT_COLUMNS)
    assert str(df["archived"].dtype) == "boolean" and str(df["stars"].dtype) == "Int64"

    summary = _meta(instance, "inventory_summary")
    assert summary["projects"] == 8
    assert summary["source_kind/filesystem"] == 5 and summary["source_kind/github"] == 3
    assert summary["vcs/git"] == 8
    # checkouts do not know a visibility or language (FILLED_COLUMNS): n/a, not unknown
    assert summary["visibility/public"] == 3 and summary["visibility/(n/a)"] == 5
    assert summary["language/Python"] == 2 and summary["language/Go"] == 1
    assert summary["language/(n/a)"] == 5 and "language/(unknown)" not in summary
    assert summary["marker/pyproject.toml"] == 1
    assert summary["activity_age/< 7 days"] == 5  # the checkouts' commits were just made
    assert summary["activity_age/>= 1 year"] == 3  # the fake's pushed_at dates (2024)
    by_source = {
        r.data["source_kind"]: r.data["projects"] for r in summary["by_source_kind"].records
    }
    assert by_source == {"filesystem": 5, "github": 3}

    coverage = result.output_for_node("clone_coverage")
    assert [r["name"] for r in coverage["not_cloned"]] == ["old-tool"]
    assert [r["name"] for r in coverage["outside_orgs"]] == ["elsewhere"]
    assert sorted(r["name"] for r in coverage["cloned_twice"]) == ["app", "app-again"]
    meta = _meta(instance, "clone_coverage")
    assert (meta["not_cloned"], meta["outside_orgs"], meta["cloned_twice"]) == (1, 1, 1)
    assert "old-tool" in meta["not_cloned_list"]

    import pandas as pd

    exported = _meta(instance, "inventory_export")
    assert exported["written"] is True and exported["rows"] == 8
    assert sorted(pd.read_parquet(export)["name"]) == sorted(df["name"])


def test_export_asset_without_a_path_writes_nothing(enumerated):
    instance, _ = enumerated
    assert _materialize(instance, ["inventory_frame", "inventory_export"]).success
    assert _meta(instance, "inventory_export")["written"] is False


def _tick(instance):
    """One evaluation of ``reports_after_enumeration`` as the daemon makes it."""
    return reports_after_enumeration(
        build_sensor_context(instance=instance, resources={"inventory": InventoryResource()})
    )


def test_reports_are_requested_once_for_the_newest_completed_enumeration(enumerated):
    """A completed run asks for its reports once: the request names the run; once a reports
    run of it exists (the sensor's own, or one ``enum-pipeline run --reports`` made), the
    sensor says which and asks nothing; a newer completed run asks again."""
    instance, result = enumerated
    request = _tick(instance)
    assert isinstance(request, RunRequest)
    assert request.run_key == f"reports-{result.run_id}"
    assert request.tags[ENUMERATION_RUN_TAG] == result.run_id
    assert reports_after_enumeration.job_name == "inventory_reports"

    made = _materialize(instance, REPORTS, tags=request.tags)
    skipped = _tick(instance)
    assert not isinstance(skipped, RunRequest)
    assert made.run_id in skipped.skip_message and result.run_id in skipped.skip_message

    newer = enumerate_scopes(instance)
    assert newer.success
    again = _tick(instance)
    assert isinstance(again, RunRequest) and again.run_key == f"reports-{newer.run_id}"


def test_a_run_made_while_no_daemon_ran_gets_its_reports_when_the_sensor_first_ticks(
    enumerated,
):
    """``enum-pipeline run`` leaves the reports to this sensor, and the daemon may start long
    after: its first tick (no cursor, no earlier tick) asks for the newest completed run's."""
    instance, result = enumerated
    assert not instance.get_runs(RunsFilter(job_name="inventory_reports"))
    request = _tick(instance)
    assert isinstance(request, RunRequest) and result.run_id in request.run_key


def test_a_wave_of_scope_runs_requests_the_reports_once_the_last_one_completes(enumerated):
    """The schedule launches one run per scope: while another enumeration run is queued or
    running, nothing is asked; once it has ended, the newest completed run's reports are."""
    from dagster import DagsterRunStatus

    instance, result = enumerated
    job = defs.resolve_job_def("enumerate_projects")
    other = instance.create_run_for_job(job_def=job, status=DagsterRunStatus.STARTED)
    waiting = _tick(instance)
    assert not isinstance(waiting, RunRequest)
    assert "1 enumeration runs are still queued or running" in waiting.skip_message
    instance.report_run_canceled(instance.get_run_by_id(other.run_id))
    request = _tick(instance)
    assert isinstance(request, RunRequest) and result.run_id in request.run_key


def test_loading_the_code_location_does_not_import_pandas():
    code = "import sys; import enum_pipeline.definitions; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("remote", [None, "https://github.com/someone/tool.git"])
def test_reports_materialize_on_an_inventory_without_hosted_repositories(
    db_url, tmp_path, monkeypatch, remote
):
    """Checkouts only (with or without a remote), no code host: nothing to join, every report
    still materializes and says zero (the coverage report once failed on an empty side)."""
    make_repo(tmp_path / "tree" / "tool", remote=remote)
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", str(tmp_path / "tree"))
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)
    with instance_for_test() as instance:
        assert enumerate_scopes(instance).success
        result = _materialize(instance, REPORTS)
        assert result.success
        meta = _meta(instance, "clone_coverage")
        outside = 1 if remote else 0  # a remote in no inventoried organisation
        assert (meta["not_cloned"], meta["outside_orgs"], meta["cloned_twice"]) == (0, outside, 0)
        assert _meta(instance, "inventory_summary")["projects"] == 1
    InventoryStore(db_url).dispose()
