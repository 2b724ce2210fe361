"""The Dagster code location: ``enum_pipeline.definitions:defs``."""

from dagster import Definitions

from enum_pipeline.defs.assets import projects, run_state, scanned_projects, stale_projects_cleanup
from enum_pipeline.defs.checks import (
    cleanup_not_blocked,
    projects_flush_verified,
    projects_scopes_complete,
)
from enum_pipeline.defs.jobs import (
    approve_cleanup,
    cleanup_projects,
    enumerate_projects,
    restore_projects,
)
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.schedules import enumerate_projects_schedule
from enum_pipeline.defs.sensors import (
    cleanup_after_confirmed_flush,
    mark_canceled_enumeration_runs,
    mark_failed_enumeration_runs,
    reap_abandoned_runs,
)

defs = Definitions(
    assets=[scanned_projects, projects, run_state, stale_projects_cleanup],
    asset_checks=[projects_flush_verified, projects_scopes_complete, cleanup_not_blocked],
    jobs=[enumerate_projects, cleanup_projects, approve_cleanup, restore_projects],
    schedules=[enumerate_projects_schedule],
    sensors=[
        cleanup_after_confirmed_flush,
        mark_failed_enumeration_runs,
        mark_canceled_enumeration_runs,
        reap_abandoned_runs,
    ],
    resources={"inventory": InventoryResource()},
)
