"""The periodic enumeration."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from enum_pipeline.defs.constants import schedule_cron
from enum_pipeline.defs.jobs import enumerate_projects

enumerate_projects_schedule = ScheduleDefinition(
    name="enumerate_projects_schedule",
    job=enumerate_projects,
    cron_schedule=schedule_cron(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly enumeration (cron from ENUM_PIPELINE_SCHEDULE); start it in the UI.",
)
