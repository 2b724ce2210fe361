"""Sensors: request the cleanup after a confirmed flush; mark failed runs; reap stopped runs."""

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from enum_pipeline.defs.jobs import cleanup_projects, enumerate_projects
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.steps import cleanup_due


def enumeration_run_of(record) -> str | None:
    """The enumeration run a Dagster cleanup/approval/restore run was about (from its tag or
    its run config), or None."""
    run_id = record.tags.get("enum_pipeline/enumeration_run")
    if run_id:
        return run_id
    ops = (record.run_config or {}).get("ops", {})
    for node in ("stale_projects_cleanup", "restore_removed_projects"):
        value = ops.get(node, {}).get("config", {}).get("run_id")
        if value:
            return value
    return None


def cleanup_run_config(run_id: str, **extra) -> dict:
    """Run config of ``cleanup_projects`` for enumeration run ``run_id``."""
    return {"ops": {"stale_projects_cleanup": {"config": {"run_id": run_id, **extra}}}}


@sensor(
    job=cleanup_projects,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts cleanup_projects once for each confirmed flush of projects.",
)
def cleanup_after_confirmed_flush(context: SensorEvaluationContext, inventory: InventoryResource):
    """One cleanup run per confirmed flush, read from the latest ``projects`` materialization;
    whether it is due is ``steps.cleanup_due`` (the CLI asks the same)."""
    # Cleanups and restores record row counts on projects too; the sensor wants the flushes.
    records = [
        r
        for r in context.instance.fetch_materializations(AssetKey("projects"), limit=20).records
        if "flush_succeeded" in r.event_log_entry.asset_materialization.metadata
    ]
    if not records:
        return SkipReason("no flush of projects recorded yet")
    storage_id = records[0].storage_id
    event = records[0].event_log_entry
    if context.cursor and int(context.cursor) >= storage_id:
        return SkipReason(f"latest flush (event {storage_id}) was already handled")
    metadata = event.asset_materialization.metadata
    run_id = metadata["run_id"].value if "run_id" in metadata else None
    if run_id is None:
        context.update_cursor(str(storage_id))
        return SkipReason("latest projects materialization carries no run_id")
    due = cleanup_due(inventory.store(), run_id)
    if due.wait:
        return SkipReason(due.reason)
    context.update_cursor(str(storage_id))
    if not due.due:
        return SkipReason(due.reason)
    return RunRequest(
        run_key=run_id,
        run_config=cleanup_run_config(run_id),
        tags={"enum_pipeline/enumeration_run": run_id},
    )


@run_failure_sensor(
    monitored_jobs=[enumerate_projects],
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks the inventory run failed when its Dagster run fails.",
)
def mark_failed_enumeration_runs(context: RunFailureSensorContext, inventory: InventoryResource):
    """A failed Dagster run leaves no ``active`` run_state behind."""
    run = context.dagster_run
    reason = f"dagster run failed: {context.failure_event.message or 'no message'}"
    marked = inventory.store().fail_attempt(run.run_id, reason)
    if marked:
        context.log.info(f"marked run_state failed for {marked}")


@run_status_sensor(
    run_status=DagsterRunStatus.CANCELED,
    monitored_jobs=[enumerate_projects],
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks the inventory run failed when its Dagster run is cancelled.",
)
def mark_canceled_enumeration_runs(context: RunStatusSensorContext, inventory: InventoryResource):
    """A cancelled Dagster run leaves no ``active`` run_state behind."""
    inventory.store().fail_attempt(context.dagster_run.run_id, "dagster run was canceled")


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks failed every active run whose heartbeat stopped or whose process ended.",
)
def reap_abandoned_runs(context: SensorEvaluationContext, inventory: InventoryResource):
    """Mark ``failed`` every active run whose heartbeat stopped or whose Dagster run ended."""

    def attempt_finished(dagster_run_id: str) -> bool:
        record = context.instance.get_run_by_id(dagster_run_id)
        return record is not None and record.is_finished

    reaped = inventory.store().reap(attempt_finished=attempt_finished)
    if reaped:
        return SkipReason(f"marked abandoned: {', '.join(reaped)}")
    return SkipReason("no abandoned run")
