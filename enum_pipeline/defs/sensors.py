"""Sensors: request the cleanup after a confirmed flush; mark failed runs; reap stopped runs.

Each sensor that names a job is built by a factory taking that job (Dagster's
``project_fully_featured`` pattern): this module's bodies depend on no job module, and the
names the definitions expose are the factories' products at the end of this module.
"""

from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from enum_pipeline.defs.cleanup_notice import REQUESTED_BY_TAG, already_claimed
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG, cleanup_run_config
from enum_pipeline.defs.jobs import cleanup_projects, enumerate_projects
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.steps import cleanup_due

if TYPE_CHECKING:
    from dagster import JobDefinition
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

    Job = JobDefinition | UnresolvedAssetJobDefinition


SENSOR_NAME = "cleanup_after_confirmed_flush"


def make_cleanup_sensor(job: "Job") -> SensorDefinition:
    """The sensor that requests ``job`` (the cleanup) once for each confirmed flush."""

    @sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} once for each confirmed flush of projects.",
    )
    def cleanup_after_confirmed_flush(
        context: SensorEvaluationContext, inventory: InventoryResource
    ):
        """One cleanup run per confirmed flush, read from the latest ``projects``
        materialization; whether it is due is ``steps.cleanup_due`` (the CLI asks the same)."""
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
        claimed = already_claimed(inventory.store(), run_id)
        if claimed:
            return SkipReason(claimed)
        return RunRequest(
            run_key=run_id,
            run_config=cleanup_run_config(run_id),
            tags={ENUMERATION_RUN_TAG: run_id, REQUESTED_BY_TAG: "sensor " + SENSOR_NAME},
        )

    return cleanup_after_confirmed_flush


def make_run_end_sensors(
    job: "Job",
) -> tuple[RunStatusSensorDefinition, RunStatusSensorDefinition]:
    """The sensors that mark the inventory run failed when a Dagster run of ``job`` (the
    enumeration) fails or is cancelled: a run that ended leaves no ``active`` run_state."""

    @run_failure_sensor(
        name="mark_failed_enumeration_runs",
        monitored_jobs=[job],
        default_status=DefaultSensorStatus.RUNNING,
        description="Marks the inventory run failed when its Dagster run fails.",
    )
    def mark_failed_enumeration_runs(
        context: RunFailureSensorContext, inventory: InventoryResource
    ):
        """A failed Dagster run leaves no ``active`` run_state behind."""
        run = context.dagster_run
        reason = f"dagster run failed: {context.failure_event.message or 'no message'}"
        marked = inventory.store().fail_attempt(run.run_id, reason)
        if marked:
            context.log.info(f"marked run_state failed for {marked}")

    @run_status_sensor(
        name="mark_canceled_enumeration_runs",
        run_status=DagsterRunStatus.CANCELED,
        monitored_jobs=[job],
        default_status=DefaultSensorStatus.RUNNING,
        description="Marks the inventory run failed when its Dagster run is cancelled.",
    )
    def mark_canceled_enumeration_runs(
        context: RunStatusSensorContext, inventory: InventoryResource
    ):
        """A cancelled Dagster run leaves no ``active`` run_state behind."""
        inventory.store().fail_attempt(context.dagster_run.run_id, "dagster run was canceled")

    return mark_failed_enumeration_runs, mark_canceled_enumeration_runs


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


# The sensors the definitions expose, each built with the job it watches or requests.
cleanup_after_confirmed_flush = make_cleanup_sensor(cleanup_projects)
mark_failed_enumeration_runs, mark_canceled_enumeration_runs = make_run_end_sensors(
    enumerate_projects
)
