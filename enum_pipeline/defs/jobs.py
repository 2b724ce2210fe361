"""Jobs: one enumeration run, and one cleanup run."""

from dagster import (
    AssetSelection,
    Config,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from enum_pipeline.defs.assets import projects, run_state, scanned_projects, stale_projects_cleanup
from enum_pipeline.defs.resources import InventoryResource

# The run queue admits one run per value of this tag (see dagster.yaml); the database enforces
# the single active run anyway, whatever launched it.
INVENTORY_TAG = "enum_pipeline/inventory"

enumerate_projects = define_asset_job(
    "enumerate_projects",
    selection=AssetSelection.assets(scanned_projects, projects, run_state),
    executor_def=in_process_executor,
    tags={INVENTORY_TAG: "default"},
    description="Scan every source, flush and verify, then complete the run.",
)

cleanup_projects = define_asset_job(
    "cleanup_projects",
    selection=AssetSelection.assets(stale_projects_cleanup),
    executor_def=in_process_executor,
    tags={"enum_pipeline/cleanup": "default"},
    description="Remove what a completed, verified run did not see (deletion guard applies).",
)


class RestoreConfig(Config):
    """Run config of ``restore_projects``."""

    run_id: str = Field(description="The run whose cleanup removed the projects to bring back.")


@op
def restore_removed_projects(
    context: OpExecutionContext, config: RestoreConfig, inventory: InventoryResource
) -> list[str]:
    """Bring back every project the cleanup of ``run_id`` removed (those not present again)."""
    keys = inventory.store().restore(config.run_id, restored_by=f"dagster run {context.run.run_id}")
    context.log.info(f"restored {len(keys)} projects removed by the cleanup of {config.run_id}")
    context.add_output_metadata({"restored": len(keys), "run_id": config.run_id})
    return keys


@job(executor_def=in_process_executor, tags={"enum_pipeline/cleanup": "default"})
def restore_projects():
    """Restore what one cleanup removed (launch it with the run id in the launchpad)."""
    restore_removed_projects()
