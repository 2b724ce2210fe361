"""Jobs: one enumeration run, and one cleanup run."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from enum_pipeline.defs.assets import projects, run_state, scanned_projects, stale_projects_cleanup

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
