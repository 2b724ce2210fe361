"""Asset checks: a flush that is not verified stops the run; a blocked cleanup is an error."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from enum_pipeline.defs.assets import projects, stale_projects_cleanup
from enum_pipeline.defs.resources import InventoryResource


@asset_check(asset=projects, blocking=True)
def projects_flush_verified(inventory: InventoryResource, projects: dict) -> AssetCheckResult:
    """Passes only when the store confirms this run's flush (``flush_succeeded``)."""
    run_id = projects["run_id"]
    info = inventory.store().get_run(run_id)
    return AssetCheckResult(
        passed=bool(info.flush_succeeded),
        severity=AssetCheckSeverity.ERROR,
        description=None if info.flush_succeeded else f"flush not verified: {info.error}",
        metadata={
            "run_id": run_id,
            "flush_succeeded": bool(info.flush_succeeded),
            "status": info.status,
            "confirmed": info.confirmed_count,
        },
    )


@asset_check(asset=stale_projects_cleanup)
def cleanup_not_blocked(stale_projects_cleanup: dict) -> AssetCheckResult:
    """Fails when the deletion guard held the cleanup back (an operator must look)."""
    blocked = stale_projects_cleanup["status"] == "blocked"
    return AssetCheckResult(
        passed=not blocked,
        severity=AssetCheckSeverity.ERROR,
        description=stale_projects_cleanup.get("reason") if blocked else None,
        metadata={
            "run_id": stale_projects_cleanup["run_id"],
            "status": stale_projects_cleanup["status"],
            "candidates": stale_projects_cleanup["candidates"],
            "removed": stale_projects_cleanup["removed"],
        },
    )
