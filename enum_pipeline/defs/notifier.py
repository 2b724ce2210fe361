"""The ``notifier`` resource: where notices of a blocked cleanup or a stuck scope go.

A generic webhook (JSON POST, built in), Slack through ``dagster-slack`` and Microsoft Teams
through ``dagster-msteams`` (``pip install 'enum-pipeline[slack]'`` / ``[msteams]``), each only
when configured; in the code location each channel's value comes from an environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx
from dagster import ConfigurableResource, EnvVar
from pydantic import Field

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
