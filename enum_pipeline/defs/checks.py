"""Asset checks: a flush that is not verified stops the run; a blocked cleanup is an error."""

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    asset_check,
)

from enum_pipeline.defs.assets import stale_projects_cleanup
from enum_pipeline.defs.cleanup_notice import check_evaluation
from enum_pipeline.defs.enumeration import inventory_run_id
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import SCOPES, partition_key, scope_key

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
def cleanup_not_blocked(context: AssetCheckExecutionContext, stale_projects_cleanup: dict):
    """Fails (ERROR) when the deletion guard held the cleanup back, then fails the cleanup's
    Dagster run with one sentence and the approve link (``cleanup_notice``)."""
    yield from check_evaluation(stale_projects_cleanup, context.run.run_id)


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


def _scope_health(reading) -> tuple[bool, str | None]:
    """Whether a scope's reading by the run is healthy, and why not."""
    if reading is None:
        return False, "not read by this run"
    if not reading.complete:
        return False, f"incomplete, its projects are kept unchecked: {reading.reason}"
    if reading.trusted is False:
        return False, (
            f"held, its cleanup waits: {reading.identity_note or 'identity changed'}; accept it "
            "with the job accept_scope_identity"
        )
    return True, None


@asset_check(asset=AssetKey("run_state"), partitions_def=SCOPES)
def scope_health(context: AssetCheckExecutionContext, inventory: InventoryResource):
    """Per scope (partition): warns when the run read it incompletely, or holds its cleanup
    because its identity changed; the partition view shows which scopes are held."""
    store = inventory.store()
    run_id = inventory_run_id(context, store)
    readings = {partition_key(r.scope_key): r for r in store.scopes(run_id)}
    results = {}
    for key in context.partition_keys:
        passed, why = _scope_health(readings.get(key))
        results[key] = AssetCheckResult(
            passed=passed,
            severity=AssetCheckSeverity.WARN,
            description=why,
            metadata={"run_id": run_id, "scope": scope_key(key)},
        )
    if len(results) == 1:
        return next(iter(results.values()))
    for key, result in results.items():  # a range: one evaluation per partition
        context.op_execution_context.log_event(
            AssetCheckEvaluation(
                asset_key=AssetKey("run_state"),
                check_name="scope_health",
                passed=result.passed,
                partition=key,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
            )
        )
    failing = [k for k, r in results.items() if not r.passed]
    return AssetCheckResult(
        passed=not failing,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(failing)} of {len(results)} scopes not healthy" if failing else None,
        metadata={"run_id": run_id, "unhealthy_scopes": len(failing)},
    )
