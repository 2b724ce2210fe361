"""Asset checks: a flush that is not verified stops the run; a blocked cleanup is an error."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from enum_pipeline.defs.assets import projects, stale_projects_cleanup
from enum_pipeline.defs.cleanup_notice import check_evaluation
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


@asset_check(asset=stale_projects_cleanup, blocking=True)
def cleanup_not_blocked(context: AssetCheckExecutionContext, stale_projects_cleanup: dict):
    """Fails (ERROR) when the deletion guard held the cleanup back, then fails the cleanup's
    Dagster run with one sentence and the approve link (``cleanup_notice``)."""
    yield from check_evaluation(stale_projects_cleanup, context.run.run_id)


@asset_check(asset=projects)
def projects_scopes_complete(inventory: InventoryResource) -> AssetCheckResult:
    """Warns when the newest read of a scope was incomplete (its projects are kept, unchecked)."""
    incomplete = [s for s in inventory.store().scope_summary() if s["incomplete"]]
    return AssetCheckResult(
        passed=not incomplete,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(f"{s['scope']}: {s['reason']}" for s in incomplete) or None,
        metadata={"incomplete_scopes": len(incomplete)},
    )
