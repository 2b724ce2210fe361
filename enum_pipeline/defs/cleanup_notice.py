"""What an operator is told about a blocked cleanup: one sentence, the approve link, the check.

A blocked cleanup's Dagster run fails on its check with a ``Failure`` whose description is the
sentence and whose metadata is the approve link (the UI shows a step failure's message, then its
metadata, then the stack), so the sentence and the link come before any stack trace. The link
opens ``approve_cleanup``'s launchpad with the run *and the plan id* filled in: the approval
approves that plan or nothing (``InventoryStore.approve_cleanup``).
"""

from __future__ import annotations

import os
from urllib.parse import urlencode

from dagster import AssetCheckResult, AssetCheckSeverity, Failure, MetadataValue

from enum_pipeline.defs.constants import APPROVE_JOB, cleanup_run_config

#: The webserver's public address (e.g. ``https://dagster.example.org``): the approve link is made
#: absolute with it, for notifications read outside the UI. Unset: a path the UI opens itself.
UI_URL_ENV = "ENUM_PIPELINE_UI_URL"
#: The run tag saying who asked for a cleanup (the sensor, the CLI); the claim names it.
REQUESTED_BY_TAG = "enum_pipeline/requested_by"


def approve_config(run_id: str, plan_id: str) -> dict:
    """``approve_cleanup``'s run config approving exactly plan ``plan_id`` of run ``run_id``."""
    return cleanup_run_config(run_id, approve=True, plan_id=plan_id)


def approve_link(
    run_id: str,
    plan_id: str,
    base_url: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """The launchpad of ``approve_cleanup`` with this plan's approval filled in, opened on
    ``tags`` (the cleanup's partition: it is partitioned by scope, as its run was): absolute
    when ``base_url`` (default ``$ENUM_PIPELINE_UI_URL``) is set, else a path of the UI."""
    import yaml

    fields = {"config": yaml.safe_dump(approve_config(run_id, plan_id))}
    for i, (key, value) in enumerate((tags or {}).items()):  # the launchpad's array notation
        fields[f"tags[{i}][key]"], fields[f"tags[{i}][value]"] = key, value
    query = urlencode(fields)
    path = f"/locations/enum_pipeline/jobs/{APPROVE_JOB}/playground/setup?{query}"
    base = (base_url if base_url is not None else os.environ.get(UI_URL_ENV, "")).rstrip("/")
    return f"{base}{path}"


def _link(data: dict) -> str:
    """The approve link the cleanup asset put in its output (its partition's), else a new one."""
    return data.get("approve_link") or approve_link(data["run_id"], data["plan_id"])


def blocked_sentence(data: dict) -> str:
    """The one sentence of a blocked cleanup (``CleanupResult.as_dict()``): what, why, how."""
    run_id, plan_id = data["run_id"], data.get("plan_id")
    return (
        f"Cleanup of run {run_id} held back by the deletion guard: it would remove "
        f"{data['would_remove']} projects ({data.get('reason') or 'guard'}), and removed none; "
        f"approve plan {plan_id} with the approve link below, then Launch Run "
        f"(or: enum-pipeline approve {run_id} --plan {plan_id})."
    )


def claimant(context) -> str:
    """Who this cleanup run is, as its claim records it: the Dagster run, and who asked."""
    asked = context.run.tags.get(REQUESTED_BY_TAG)
    return f"dagster run {context.run.run_id}" + (f" ({asked})" if asked else "")


def already_claimed(store, run_id: str) -> str | None:
    """Why the sensor requests no cleanup for ``run_id``'s flush: another requester claimed it
    (the CLI's ``run``, an operator); None when it is unclaimed."""
    held = store.cleanup_claim(run_id)
    if held is None:
        return None
    return f"the cleanup of run {run_id} was claimed by {held.claimed_by}: not requested again"


def check_evaluation(data: dict, dagster_run_id: str):
    """``cleanup_not_blocked``'s evaluation, then (blocked) the ``Failure`` that ends the run."""
    blocked = data["status"] == "blocked"
    description = None
    if blocked:
        description = (
            f"Cleanup run {dagster_run_id} of run {data['run_id']} is blocked: would remove "
            f"{data['would_remove']} projects ({data.get('reason')}); approve plan "
            f"{data.get('plan_id')} with its approve link (job approve_cleanup) or "
            f"`enum-pipeline approve {data['run_id']} --plan {data.get('plan_id')}`."
        )
    elif data.get("claimed_by") and data.get("already_done"):
        description = f"no-op: {data.get('reason')}"
    metadata = {
        "run_id": data["run_id"],
        "status": data["status"],
        "candidates": data["candidates"],
        "would_remove": data["would_remove"],
        "removed": data["removed"],
        "marked_missing": data["marked_missing"],
        "plan_id": data.get("plan_id") or "",
    }
    if blocked:
        metadata["approve"] = MetadataValue.url(_link(data))
    yield AssetCheckResult(
        passed=not blocked,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )
    if blocked:
        raise Failure(
            description=blocked_sentence(data),
            metadata={
                "approve": MetadataValue.url(_link(data)),
                "plan_id": data["plan_id"],
                "would_remove": data["would_remove"],
            },
            allow_retries=False,
        ) from None
