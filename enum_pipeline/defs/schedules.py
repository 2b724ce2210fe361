"""The periodic enumeration."""

import os

from dagster import DefaultScheduleStatus, ScheduleDefinition

from enum_pipeline.defs.jobs import enumerate_projects

enumerate_projects_schedule = ScheduleDefinition(
    name="enumerate_projects_schedule",
    job=enumerate_projects,
    cron_schedule=os.environ.get("ENUM_PIPELINE_SCHEDULE", "0 * * * *"),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly enumeration (cron from ENUM_PIPELINE_SCHEDULE); start it in the UI.",
)
