"""Asset checks: a flush that is not verified stops the run; a blocked cleanup is an error."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    asset_check,
)

from enum_pipeline.defs.assets import stale_projects_cleanup
from enum_pipeline.defs.enumeration import inventory_run_id
from enum_pipeline.defs.resources import InventoryResource

PROJECTS = AssetKey("projects")


@asset_check(asset=PROJECTS, blocking=True)
def projects_flush_verified(
    context: AssetCheckExecutionContext, inventory: InventoryResource
) -> AssetCheckResult:
    """Passes only when the store confirms this run's flush (``flush_succeeded``)."""
    store = inventory.store()
    run_id = inventory_run_id(context, store)
    info = store.get_run(run_id)
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
def cleanup_not_blocked(stale_projects_cleanup: dict) -> AssetCheckResult:
    """Fails (ERROR, blocking: the cleanup's Dagster run fails) when the deletion guard held the
    cleanup back; approve it with the job ``approve_cleanup``."""
    data = stale_projects_cleanup
    blocked = data["status"] == "blocked"
    description = None
    if blocked:
        description = (
            f"held back: would remove {data['would_remove']} of the projects of run "
            f"{data['run_id']}, removed 0 ({data.get('reason')}); approve with the job "
            "approve_cleanup"
        )
    return AssetCheckResult(
        passed=not blocked,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "run_id": data["run_id"],
            "status": data["status"],
            "candidates": data["candidates"],
            "would_remove": data["would_remove"],
            "removed": data["removed"],
            "marked_missing": data["marked_missing"],
        },
    )


@asset_check(asset=PROJECTS)
def projects_scopes_complete(inventory: InventoryResource) -> AssetCheckResult:
    """Warns when the newest read of a scope was incomplete (its projects are kept, unchecked)."""
    incomplete = [s for s in inventory.store().scope_summary() if s["incomplete"]]
    return AssetCheckResult(
        passed=not incomplete,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(f"{s['scope']}: {s['reason']}" for s in incomplete) or None,
        metadata={"incomplete_scopes": len(incomplete)},
    )
