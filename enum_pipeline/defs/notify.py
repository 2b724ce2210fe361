"""The sensors that notify what waits for an operator: a blocked cleanup plan, a scope stuck
incomplete or held. Each notice is sent once, whatever the ticks or restarts: the Dagster run it
is about is tagged with what was sent, and a tagged notice is never sent again. Where notices go
is the ``notifier`` resource (``defs/notifier.py``)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunFailureSensorContext,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
)

from enum_pipeline.config import ConfigError
from enum_pipeline.defs.cleanup_notice import approve_link
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG
from enum_pipeline.defs.jobs import (
    approve_cleanup,
    cleanup_projects,
    enumerate_and_clean_up,
    enumerate_projects,
)
from enum_pipeline.defs.notifier import WEBHOOK_ENV, Notice, Notifier
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import partition_tags_of
from enum_pipeline.store import RunStatus

#: The tag a notified Dagster run carries, per notice (the value is the notice's key).
NOTIFIED_TAG = "enum_pipeline/notified"


def _tag_key(notice: Notice) -> str:
    return f"{NOTIFIED_TAG}.{hashlib.sha256(notice.key.encode()).hexdigest()[:16]}"


def send_once(context, notifier: Notifier, notice: Notice, dagster_run_id: str) -> str:
    """Send ``notice`` unless a Dagster run already carries its tag; then tag ``dagster_run_id``.
    Returns what happened, for the sensor's log."""
    tag = _tag_key(notice)
    if context.instance.get_run_records(RunsFilter(tags={tag: notice.key}), limit=1):
        return f"already notified: {notice.key}"
    if not notifier.channels():
        return f"no notification channel configured ({WEBHOOK_ENV} and others unset): {notice.text}"
    sent = notifier.send(notice)
    context.instance.add_run_tags(dagster_run_id, {tag: notice.key})
    return f"notified {', '.join(sent)}: {notice.key}"


def blocked_notice(
    store, run_id: str, dagster_run_id: str, tags: dict[str, str] | None = None
) -> Notice | None:
    """The notice of ``run_id``'s blocked cleanup plan (its link opened on the partition
    ``tags`` of the cleanup run), or None (not blocked now)."""
    plan = store.blocked_plan(run_id)
    if plan is None:
        return None
    link = approve_link(run_id, plan.plan_id, tags=tags)
    text = (
        f"Cleanup of run {run_id} is blocked: it would remove {plan.would_remove} projects "
        f"({plan.reason}); approve plan {plan.plan_id}: {link} "
        f"(or enum-pipeline approve {run_id} --plan {plan.plan_id})."
    )
    return Notice(
        "cleanup_blocked",
        text,
        key=f"plan {plan.plan_id}",
        fields={**asdict(plan), "approve_url": link, "dagster_run_id": dagster_run_id},
    )


@run_failure_sensor(
    name="notify_blocked_cleanup",
    monitored_jobs=[cleanup_projects, approve_cleanup, enumerate_and_clean_up],
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends one notification per blocked cleanup plan (the notifier resource).",
)
def notify_blocked_cleanup(
    context: RunFailureSensorContext, inventory: InventoryResource, notifier: Notifier
):
    """A cleanup run that failed blocked: one notice for its plan, never twice."""
    run = context.dagster_run
    run_id = run.tags.get(ENUMERATION_RUN_TAG)
    notice = (
        blocked_notice(inventory.store(), run_id, run.run_id, partition_tags_of(run.tags))
        if run_id
        else None
    )
    if notice is None:
        return SkipReason(f"dagster run {run.run_id} failed, not on a blocked cleanup")
    context.log.info(send_once(context, notifier, notice, run.run_id))


def stuck_scopes(store, threshold: int) -> list[Notice]:
    """A notice per scope of the newest completed run that stayed incomplete or held in more
    than ``threshold`` of its own readings in a row, up to the newest (keyed by the streak's
    first run: one notice a streak). Each scope's readings are its own: with one run per scope,
    the runs of other scopes neither count nor break a streak."""
    newest = next((r for r in store.runs(20) if r.status == RunStatus.COMPLETED), None)
    if newest is None:
        return []
    notices = []
    for scope in sorted({s.scope_key for s in store.scopes(newest.run_id)}):
        streak: list[tuple[str, str]] = []
        for reading in store.scope_readings(scope, threshold + 1):
            trouble = _trouble(reading)
            if trouble is None:
                break
            streak.append((reading.run_id, trouble))
        if len(streak) <= threshold:
            continue
        text = (
            f"Scope {scope} has been {streak[0][1]} for more than {threshold} runs in a row "
            f"(notify.stuck_after_runs={threshold}); its projects are kept, unchecked, until it "
            "is read completely again or its new identity is accepted."
        )
        first_run = _streak_start(store, scope)
        notices.append(
            Notice(
                "scope_stuck",
                text,
                key=f"scope {scope} since run {first_run}",
                fields={"scope": scope, "runs": len(streak), "since_run": first_run},
            )
        )
    return notices


def _streak_start(store, scope: str) -> str:
    """The run that began a scope's current streak of trouble (its oldest troubled reading
    since its last good one, among its newest 500)."""
    start = None
    for reading in store.scope_readings(scope, 500):
        if _trouble(reading) is None:
            break
        start = reading.run_id
    return start or ""


def _trouble(reading) -> str | None:
    if not reading.complete:
        return f"incomplete ({reading.reason})"
    if reading.trusted is False:
        return f"held ({reading.identity_note})"
    return None


@run_status_sensor(
    name="notify_stuck_scopes",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[enumerate_projects, enumerate_and_clean_up],
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends one notification when a scope stays incomplete or held for more than "
    "notify.stuck_after_runs runs.",
)
def notify_stuck_scopes(
    context: RunStatusSensorContext, inventory: InventoryResource, notifier: Notifier
):
    """After each completed enumeration: one notice per stuck scope's streak, never twice."""
    try:
        threshold = inventory.pipeline_config().notify.stuck_after_runs
    except ConfigError as err:
        return SkipReason(str(err))
    notices = stuck_scopes(inventory.store(), threshold)
    for notice in notices:
        context.log.info(send_once(context, notifier, notice, context.dagster_run.run_id))
    if not notices:
        return SkipReason("no scope stuck incomplete or held")


# A module with a ``defs`` object contributes only that to the folder's definitions (the
# notifier resource is bound with the others, in ``enum_pipeline.defs``).
defs = Definitions(sensors=[notify_blocked_cleanup, notify_stuck_scopes])
