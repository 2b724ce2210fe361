"""The periodic enumeration: one run per scope partition (or per group of ``scopes_per_run``
scopes), each under its queue tags."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from enum_pipeline.defs.constants import SCOPE_TAG, SCOPES_PARTITIONS, schedule_cron
from enum_pipeline.defs.jobs import enumerate_projects
from enum_pipeline.defs.placement import scope_run_groups
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import partition_keys


@schedule(
    name="enumerate_projects_schedule",
    job=enumerate_projects,
    cron_schedule=schedule_cron(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly enumeration (cron from ENUM_PIPELINE_SCHEDULE), one run per configured "
    "scope (its partition), or per group of scopes_per_run scopes on one host and token, in "
    "parallel within the run queue's limits; start it in the UI.",
)
def enumerate_projects_schedule(context: ScheduleEvaluationContext, inventory: InventoryResource):
    """The runs of ``placement.scope_run_groups``: one per scope with ``scopes_per_run: 1``;
    a scope not yet a partition is added first (the sync sensor would add it within a minute)."""
    from enum_pipeline.config import ConfigError

    try:
        pipeline = inventory.pipeline_config()
        sources = pipeline.build_sources()
    except ConfigError as err:
        return SkipReason(f"no enumeration this tick: {err}")
    wanted = partition_keys(k for source in sources for k in source.scope_keys())
    existing = set(context.instance.get_dynamic_partitions(SCOPES_PARTITIONS))
    missing = [k for k in wanted if k not in existing]
    if missing:
        context.instance.add_dynamic_partitions(SCOPES_PARTITIONS, missing)
    order = context.instance.get_dynamic_partitions(SCOPES_PARTITIONS)
    alone: set[str] = set()
    if pipeline.scopes_per_run > 1:  # a scope whose last reading failed holds no run-mates
        readings = inventory.store().latest_scope_readings()
        alone = {scope for scope, reading in readings.items() if not reading.complete}
    requests = []
    for keys, tags in scope_run_groups(sources, order, pipeline.scopes_per_run, alone):
        if len(keys) == 1:
            requests.append(RunRequest(run_key=keys[0], partition_key=keys[0], tags=tags))
        else:  # a range: its tags are the partitions (a RunRequest names one key at most)
            requests.append(RunRequest(run_key=tags[SCOPE_TAG], tags=tags))
    return requests
