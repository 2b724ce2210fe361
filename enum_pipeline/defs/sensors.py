"""Sensors: request the cleanup after a confirmed flush; mark failed runs; reap stopped runs.

Each sensor that names a job is built by a factory taking that job (Dagster's
``project_fully_featured`` pattern): this module's bodies depend on no job module, and the
names the definitions expose are the factories' products at the end of this module.
"""

from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from enum_pipeline.defs.cleanup_notice import REQUESTED_BY_TAG, already_claimed
from enum_pipeline.defs.constants import (
    ENUMERATION_RUN_TAG,
    SCOPES_PARTITIONS,
    cleanup_run_config,
)
from enum_pipeline.defs.jobs import cleanup_projects, enumerate_projects
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import (
    PARTITION_TAG,
    SCOPES,
    configured_partition_keys,
    partition_tags_of,
    sync_plan,
)
from enum_pipeline.steps import cleanup_due

if TYPE_CHECKING:
    from dagster import JobDefinition
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

    Job = JobDefinition | UnresolvedAssetJobDefinition


#: Flushes of projects one tick reads at most (the rest on the next tick).
FLUSHES_READ = 100


def _metadata(record) -> dict:
    return record.event_log_entry.asset_materialization.metadata


def _partition_tags(instance, record) -> dict[str, str]:
    """The partition (or range) tags of the enumeration run that recorded a flush."""
    run = instance.get_run_by_id(record.event_log_entry.run_id)
    tags = partition_tags_of(run.tags) if run is not None else {}
    return tags or {PARTITION_TAG: record.partition_key}


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
        """One cleanup run per confirmed flush, for the flushed run's partitions: every flush
        of ``projects`` recorded since the cursor (the newest one on a first tick), oldest
        first; whether it is due is ``steps.cleanup_due`` (the CLI asks the same)."""
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("projects"), after_storage_id=after),
            limit=FLUSHES_READ,
            ascending=after is not None,
        ).records
        # Cleanups and restores record row counts on projects too; the sensor wants the flushes.
        flushes = [r for r in records if "flush_succeeded" in _metadata(r)]
        if after is None:
            flushes = flushes[:1]
        if not flushes:
            if after is None:
                return SkipReason("no flush of projects recorded yet")
            return SkipReason(f"latest flush (event {after}) was already handled")
        store = inventory.store()
        requests, skipped, cursor = [], [], after
        for record in flushes:
            metadata = _metadata(record)
            run_id = metadata["run_id"].value if "run_id" in metadata else None
            due = cleanup_due(store, run_id) if run_id else None
            if due is not None and due.wait:
                skipped.append(due.reason)
                break  # the cursor stays before a run still active
            cursor = record.storage_id
            claimed = already_claimed(store, run_id) if due is not None and due.due else None
            if due is None or not due.due:
                skipped.append(due.reason if due else "a projects flush carries no run_id")
            elif claimed:
                skipped.append(claimed)
            elif run_id not in {r.run_key for r in requests}:
                requests.append(
                    RunRequest(
                        run_key=run_id,
                        run_config=cleanup_run_config(run_id),
                        tags={
                            ENUMERATION_RUN_TAG: run_id,
                            REQUESTED_BY_TAG: "sensor " + SENSOR_NAME,
                            **_partition_tags(context.instance, record),
                        },
                    )
                )
        return SensorResult(
            run_requests=requests,
            skip_reason=None if requests else SkipReason("; ".join(skipped)),
            cursor=str(cursor) if cursor is not None else None,
        )

    return cleanup_after_confirmed_flush


def make_run_end_sensors(
    job: "Job",
) -> tuple[RunStatusSensorDefinition, RunStatusSensorDefinition]:
    """The sensors that mark the inventory run failed when a Dagster run of ``job`` (the
    enumeration), or of any job of this code location (the UI's Materialize and backfills run
    the implicit asset job), fails or is cancelled: a run that ended leaves no ``active``
    run_state. Only an active run whose attempt is that Dagster run is marked."""

    @run_failure_sensor(
        name="mark_failed_enumeration_runs",
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Marks the inventory run failed when its Dagster run ({job.name}, or a "
        "Materialize or backfill of the enumeration) fails.",
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


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Keeps the scope partitions in step with the configuration (a dropped scope's "
    "partition is deleted; its projects never are because of it: they become orphans).",
)
def sync_scope_partitions(context: SensorEvaluationContext, inventory: InventoryResource):
    """Add a partition for every configured scope, delete those of scopes no longer configured;
    a configuration that cannot be read changes nothing."""
    from enum_pipeline.config import ConfigError

    try:
        wanted = configured_partition_keys(inventory.pipeline_config())
    except ConfigError as err:
        return SkipReason(f"scope partitions left as they are: {err}")
    add, delete = sync_plan(context.instance.get_dynamic_partitions(SCOPES_PARTITIONS), wanted)
    if not add and not delete:
        return SkipReason(f"the {len(wanted)} scope partitions match the configuration")
    requests = [SCOPES.build_add_request(add)] if add else []
    requests += [SCOPES.build_delete_request(delete)] if delete else []
    return SensorResult(dynamic_partitions_requests=requests)


# The sensors the definitions expose, each built with the job it watches or requests.
cleanup_after_confirmed_flush = make_cleanup_sensor(cleanup_projects)
mark_failed_enumeration_runs, mark_canceled_enumeration_runs = make_run_end_sensors(
    enumerate_projects
)
