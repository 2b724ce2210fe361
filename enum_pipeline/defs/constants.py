"""The names the Dagster definitions share: run tags, job and op names, run-config builders.

The lowest module of ``enum_pipeline.defs``: it imports no other module of the package's
definitions, so assets, jobs, sensors, the schedule and the CLI all read one answer from here
without importing each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

#: The tag naming the enumeration run a Dagster run is about (a cleanup, approval, restore or
#: report run): the Runs list filters by it, and a restore accepts such a run's id.
ENUMERATION_RUN_TAG = "enum_pipeline/enumeration_run"
CLEANUP_TAGS = {"enum_pipeline/cleanup": "default"}
#: The Dagster concurrency pool of the cleanup: one cleanup step at a time applies the
#: deletion guard (the enumeration has none: one writer per scope is the database's, and the
#: run queue limits runs per scope and per host and token).
CLEANUP_POOL = "enum_pipeline/cleanup"

ENUMERATE_JOB = "enumerate_projects"
CLEANUP_JOB = "cleanup_projects"
#: ``enum-pipeline run``: the enumeration and the cleanup of its own flush in one Dagster run.
RUN_AND_CLEAN_JOB = "enumerate_and_clean_up"
APPROVE_JOB = "approve_cleanup"
#: The ops whose config names the enumeration run: the cleanup asset, the restore op.
CLEANUP_OP = "stale_projects_cleanup"
RESTORE_OP = "restore_removed_projects"

#: The enumeration schedule's cron when ``ENUM_PIPELINE_SCHEDULE`` is unset: hourly.
DEFAULT_SCHEDULE = "0 * * * *"


def schedule_cron() -> str:
    """The enumeration schedule's cron (``ENUM_PIPELINE_SCHEDULE``, hourly by default)."""
    return os.environ.get("ENUM_PIPELINE_SCHEDULE", DEFAULT_SCHEDULE)


def cleanup_run_config(run_id: str | None = None, **extra: Any) -> dict:
    """Run config of ``cleanup_projects`` (and ``approve_cleanup``) for enumeration run
    ``run_id`` (None: the op's default, the newest run), with ``extra`` config fields."""
    config = {"run_id": run_id, **extra} if run_id is not None else dict(extra)
    return {"ops": {CLEANUP_OP: {"config": config}}}


def enumeration_run_of(record) -> str | None:
    """The enumeration run a Dagster cleanup/approval/restore run was about (from its tag or
    its run config), or None."""
    run_id = record.tags.get(ENUMERATION_RUN_TAG)
    if run_id:
        return run_id
    ops = (record.run_config or {}).get("ops", {})
    for node in (CLEANUP_OP, RESTORE_OP):
        value = ops.get(node, {}).get("config", {}).get("run_id")
        if value:
            return value
    return None


def dagster_run_lookup(instance) -> Callable[[str], str | None]:
    """``steps.resolve_run``'s fallback on a Dagster instance: the enumeration run the Dagster
    run with this id was about, or None (no such run, or not about one)."""

    def run_of(dagster_run_id: str) -> str | None:
        record = instance.get_run_by_id(dagster_run_id)
        return enumeration_run_of(record) if record is not None else None

    return run_of


#: The dynamic partitions of the run assets: one key per configured scope (see placement.py).
SCOPES_PARTITIONS = "scopes"
#: Run-queue tags (dagster.yaml limits them per unique value): one run at a time per scope,
#: and a few per code host and token, so many orgs on one host share one token's rate limit.
SCOPE_TAG = "enum_pipeline/scope"
HOST_TOKEN_TAG = "enum_pipeline/host_token"
