"""Notifications of what waits for an operator: a blocked cleanup plan, a scope stuck incomplete
or held. Each is sent once, whatever the ticks or restarts: the Dagster run it is about is tagged
with what was sent, and a tagged notice is never sent again.

The ``notifier`` resource posts to a generic webhook (JSON, built in), to Slack through
``dagster-slack`` and to Microsoft Teams through ``dagster-msteams`` (``pip install
'enum-pipeline[slack]'`` / ``[msteams]``), each only when configured.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field

import httpx
from dagster import (
    ConfigurableResource,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    RunFailureSensorContext,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
)
from pydantic import Field

from enum_pipeline.config import ConfigError
from enum_pipeline.defs.cleanup_notice import approve_link
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG
from enum_pipeline.defs.jobs import approve_cleanup, cleanup_projects, enumerate_projects
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.store import RunStatus

WEBHOOK_ENV = "ENUM_PIPELINE_WEBHOOK_URL"
SLACK_TOKEN_ENV = "ENUM_PIPELINE_SLACK_TOKEN"
SLACK_CHANNEL_ENV = "ENUM_PIPELINE_SLACK_CHANNEL"
TEAMS_WEBHOOK_ENV = "ENUM_PIPELINE_TEAMS_WEBHOOK_URL"
#: The tag a notified Dagster run carries, per notice (the value is the notice's key).
NOTIFIED_TAG = "enum_pipeline/notified"


@dataclass(frozen=True)
class Notice:
    """One notification: ``kind`` (``cleanup_blocked``, ``scope_stuck``), its sentence, and
    the fields a webhook receiver may use."""

    kind: str
    text: str
    key: str
    fields: dict = field(default_factory=dict)


class Notifier(ConfigurableResource):
    """Where notices go: every configured channel, none when nothing is configured."""

    webhook_url: str | None = Field(
        default=None, description=f"URL a notice is POSTed to as JSON (default ${WEBHOOK_ENV})."
    )
    slack_token: str | None = Field(default=None, description="Slack bot token (dagster-slack).")
    slack_channel: str | None = Field(default=None, description="Slack channel, e.g. #inventory.")
    teams_webhook_url: str | None = Field(
        default=None, description="Microsoft Teams incoming webhook (dagster-msteams)."
    )
    timeout_seconds: float = Field(default=10, gt=0, description="Per request.")

    def channels(self) -> list[str]:
        """The configured channels' names."""
        named = {
            "webhook": self.webhook_url,
            "slack": self.slack_token and self.slack_channel,
            "msteams": self.teams_webhook_url,
        }
        return [name for name, value in named.items() if value]

    def send(self, notice: Notice) -> list[str]:
        """Send ``notice`` to every configured channel; the channels it went to. A channel
        that fails raises (the sensor's tick fails and retries; nothing is marked sent)."""
        sent = []
        if self.webhook_url:
            payload = {"kind": notice.kind, "text": notice.text, "key": notice.key}
            response = httpx.post(
                self.webhook_url, json=payload | notice.fields, timeout=self.timeout_seconds
            )
            response.raise_for_status()
            sent.append("webhook")
        if self.slack_token and self.slack_channel:
            _slack(self.slack_token).get_client().chat_postMessage(
                channel=self.slack_channel, text=notice.text
            )
            sent.append("slack")
        if self.teams_webhook_url:
            from dagster_msteams import AdaptiveCard

            card = AdaptiveCard()
            card.add_attachment(text_message=notice.text)
            _teams(self.teams_webhook_url, self.timeout_seconds).get_client().post_message(
                card.payload
            )
            sent.append("msteams")
        return sent


def _slack(token: str):
    try:
        from dagster_slack import SlackResource
    except ImportError:
        raise RuntimeError(
            "slack_token is set but dagster-slack is not installed: "
            "pip install 'enum-pipeline[slack]'"
        ) from None
    return SlackResource(token=token)


def _teams(hook_url: str, timeout: float):
    try:
        from dagster_msteams import MSTeamsResource
    except ImportError:
        raise RuntimeError(
            "teams_webhook_url is set but dagster-msteams is not installed: "
            "pip install 'enum-pipeline[msteams]'"
        ) from None
    return MSTeamsResource(hook_url=hook_url, timeout=timeout)


def notifier_from_env() -> Notifier:
    """The notifier of the code location: each channel whose environment variable is set, read
    through ``EnvVar`` (the UI shows the variable's name, never its value)."""

    def env(name: str):
        return EnvVar(name) if os.environ.get(name) else None

    return Notifier(
        webhook_url=env(WEBHOOK_ENV),
        slack_token=env(SLACK_TOKEN_ENV),
        slack_channel=env(SLACK_CHANNEL_ENV),
        teams_webhook_url=env(TEAMS_WEBHOOK_ENV),
    )


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


def blocked_notice(store, run_id: str, dagster_run_id: str) -> Notice | None:
    """The notice of ``run_id``'s blocked cleanup plan, or None (not blocked now)."""
    plan = store.blocked_plan(run_id)
    if plan is None:
        return None
    link = approve_link(run_id, plan.plan_id)
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
    monitored_jobs=[cleanup_projects, approve_cleanup],
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends one notification per blocked cleanup plan (the notifier resource).",
)
def notify_blocked_cleanup(
    context: RunFailureSensorContext, inventory: InventoryResource, notifier: Notifier
):
    """A cleanup run that failed blocked: one notice for its plan, never twice."""
    run = context.dagster_run
    run_id = run.tags.get(ENUMERATION_RUN_TAG)
    notice = blocked_notice(inventory.store(), run_id, run.run_id) if run_id else None
    if notice is None:
        return SkipReason(f"dagster run {run.run_id} failed, not on a blocked cleanup")
    context.log.info(send_once(context, notifier, notice, run.run_id))


def stuck_scopes(store, threshold: int) -> list[Notice]:
    """A notice per scope that stayed incomplete or held in more than ``threshold`` completed
    runs in a row, up to the newest (keyed by the streak's first run: one notice a streak)."""
    runs = [r for r in store.runs(threshold * 4 + 10) if r.status == RunStatus.COMPLETED]
    if not runs:
        return []
    streaks: dict[str, list[tuple[str, str]]] = {}
    alive = {s.scope_key for s in store.scopes(runs[0].run_id)}
    for run in runs:
        readings = {s.scope_key: s for s in store.scopes(run.run_id)}
        for scope in list(alive):
            reading = readings.get(scope)
            trouble = _trouble(reading) if reading is not None else None
            if trouble is None:
                alive.discard(scope)
            else:
                streaks.setdefault(scope, []).append((run.run_id, trouble))
        if not alive:
            break
    notices = []
    for scope, streak in streaks.items():
        if len(streak) <= threshold:
            continue
        first_run, newest_trouble = streak[-1][0], streak[0][1]
        text = (
            f"Scope {scope} has been {newest_trouble} for {len(streak)} runs in a row (more "
            f"than notify.stuck_after_runs={threshold}); its projects are kept, unchecked, until "
            "it is read completely again or its new identity is accepted."
        )
        notices.append(
            Notice(
                "scope_stuck",
                text,
                key=f"scope {scope} since run {first_run}",
                fields={"scope": scope, "runs": len(streak), "since_run": first_run},
            )
        )
    return notices


def _trouble(reading) -> str | None:
    if not reading.complete:
        return f"incomplete ({reading.reason})"
    if reading.trusted is False:
        return f"held ({reading.identity_note})"
    return None


@run_status_sensor(
    name="notify_stuck_scopes",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[enumerate_projects],
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


# A module with a ``defs`` object contributes only that to the folder's definitions.
defs = Definitions(
    resources={"notifier": notifier_from_env()},
    sensors=[notify_blocked_cleanup, notify_stuck_scopes],
)
