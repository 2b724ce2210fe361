"""The public names users, schedules and SQL queries rely on: a rename must fail here, loudly.

New names may be added (so these are "at least" checks for tables); a name listed here changes
only with a migration note in the README and DESIGN.
"""

from __future__ import annotations

import sqlalchemy as sa
from dagster import AssetKey

from enum_pipeline.cli import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, EXIT_USAGE, build_parser
from enum_pipeline.definitions import defs
from enum_pipeline.store import InventoryStore

ASSETS = {"scanned_projects", "projects", "run_state", "stale_projects_cleanup"}
REPORT_ASSETS = {"inventory_frame", "inventory_summary", "clone_coverage", "run_changes"}
OPS = {"upsert_projects", "verify_flush"}  # in the multi-asset of the three run assets
JOBS = {"enumerate_projects", "cleanup_projects", "restore_projects"}
SENSORS = {
    "cleanup_after_confirmed_flush",
    "mark_failed_enumeration_runs",
    "mark_canceled_enumeration_runs",
    "reap_abandoned_runs",
}
SCHEDULES = {"enumerate_projects_schedule"}
PROJECTS_COLUMNS = {
    "project_key",
    "scope_key",
    "source_kind",
    "name",
    "location",
    "vcs",
    "path",
    "remote_url",
    "normalized_remote",
    "default_branch",
    "head_commit",
    "last_commit_at",
    "markers",
    "attributes",
    "content_hash",
    # the product columns (migration 0003)
    "archived",
    "fork",
    "visibility",
    "description",
    "topics",
    "language",
    "license",
    "stars",
    "created_at",
    "last_activity_at",
    "current_branch",
    "remotes",
    "upstream",
    "in_sync",
    "shallow",
    "has_stash",
    "last_fetch_at",
    "run_id",
    "seen_generation",
    "last_confirmed_run_id",
    "confirmed_generation",
    "first_seen_at",
    "last_seen_at",
    "changed_at",
    "missing_since",
    "missed_runs",
}
RUN_STATE_COLUMNS = {
    "run_id",
    "generation",
    "status",
    "flush_succeeded",
    "attempt_run_id",
    "host",
    "pid",
    "pid_start",
    "lease",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "scanned_count",
    "staged_count",
    "flushed_count",
    "confirmed_count",
    "added_count",
    "changed_count",
    "unchanged_count",
    "removed_count",
    "error",
}


def test_assets_jobs_sensors_and_schedules_keep_their_names():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert (ASSETS | REPORT_ASSETS) - keys == set()
    projects = defs.resolve_assets_def(AssetKey("projects"))
    assert {node.name for node in projects.node_def.nodes} >= OPS
    assert {k.to_user_string() for k in projects.keys} == {
        "scanned_projects",
        "projects",
        "run_state",
    }
    assert not projects.can_subset
    assert JOBS - {job.name for job in defs.resolve_all_job_defs()} == set()
    assert SENSORS - {s.name for s in defs.sensors} == set()
    assert SCHEDULES - {s.name for s in defs.schedules} == set()
    cleanup_sensor = next(s for s in defs.sensors if s.name == "cleanup_after_confirmed_flush")
    assert cleanup_sensor.job_name == "cleanup_projects"
    enumerate_job = defs.resolve_job_def("enumerate_projects")
    assert {k.to_user_string() for k in enumerate_job.asset_layer.executable_asset_keys} == {
        "scanned_projects",
        "projects",
        "run_state",
    }


def test_tables_projects_and_run_state_keep_their_columns(db_url):
    store = InventoryStore(db_url)
    inspector = sa.inspect(store.engine)
    assert PROJECTS_COLUMNS - {c["name"] for c in inspector.get_columns("projects")} == set()
    assert RUN_STATE_COLUMNS - {c["name"] for c in inspector.get_columns("run_state")} == set()
    store.dispose()


def test_the_cli_keeps_its_commands_and_exit_codes():
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED) == (0, 1, 2, 3)
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    names = {"run", "cleanup", "approve", "restore", "runs", "history", "db"}
    names |= {"projects", "export", "diff"}
    assert names - set(commands) == set()
