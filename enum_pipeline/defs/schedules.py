"""The periodic enumeration: one run per scope partition, each under its scope's queue tags."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from enum_pipeline.defs.constants import SCOPES_PARTITIONS, schedule_cron
from enum_pipeline.defs.jobs import enumerate_projects
from enum_pipeline.defs.placement import scope_run_tags
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import partition_key


@schedule(
    name="enumerate_projects_schedule",
    job=enumerate_projects,
    cron_schedule=schedule_cron(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly enumeration (cron from ENUM_PIPELINE_SCHEDULE), one run per configured "
    "scope (its partition), in parallel within the run queue's limits; start it in the UI.",
)
def enumerate_projects_schedule(context: ScheduleEvaluationContext, inventory: InventoryResource):
    """One run request per configured scope, tagged by ``placement.scope_run_tags``; a scope
    not yet a partition is added first (the sync sensor would add it within a minute)."""
    from enum_pipeline.config import ConfigError

    try:
        sources = inventory.pipeline_config().build_sources()
    except ConfigError as err:
        return SkipReason(f"no enumeration this tick: {err}")
    scopes = {}  # partition key -> (source, scope key), first source of a key wins
    for source in sources:
        for key in source.scope_keys():
            scopes.setdefault(partition_key(key), (source, key))
    existing = set(context.instance.get_dynamic_partitions(SCOPES_PARTITIONS))
    missing = [k for k in scopes if k not in existing]
    if missing:
        context.instance.add_dynamic_partitions(SCOPES_PARTITIONS, missing)
    return [
        RunRequest(run_key=key, partition_key=key, tags=scope_run_tags(source, scope))
        for key, (source, scope) in scopes.items()
    ]
