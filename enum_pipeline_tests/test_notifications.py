"""Notifications (issue 21): one per blocked cleanup plan, one per scope stuck incomplete or held,
sent to a real loopback webhook by the run-status sensors on a real Dagster instance."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

import pytest
from dagster import build_run_status_sensor_context, job, op

from enum_pipeline.config import ConfigError, load_config_file
from enum_pipeline.definitions import defs
from enum_pipeline.defs.constants import cleanup_run_config
from enum_pipeline.defs.notifier import Notifier
from enum_pipeline.defs.notify import notify_blocked_cleanup, notify_stuck_scopes
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline_tests.helpers import enumerate_scopes, run_once, run_partition_tags_of


class Webhook:
    """A real HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def _failure_context(instance, result, notifier):
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return build_run_status_sensor_context(
        sensor_name="notify_blocked_cleanup",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"inventory": InventoryResource(), "notifier": notifier},
    ).for_run_failure()


def test_a_blocked_plan_is_notified_once_across_ticks_and_duplicate_runs(
    env, instance, repo_tree, webhook
):
    assert enumerate_scopes(instance).success
    for child in repo_tree.iterdir():
        shutil.rmtree(child)
    second = enumerate_scopes(instance)
    partition = run_partition_tags_of(instance, second.run_id)
    cleanup = defs.resolve_job_def("cleanup_projects")
    blocked = cleanup.execute_in_process(
        instance=instance,
        run_config=cleanup_run_config(second.run_id),
        raise_on_error=False,
        tags=partition,
    )
    assert not blocked.success
    plan_id = blocked.output_for_node("stale_projects_cleanup")["plan_id"]
    notifier = Notifier(webhook_url=webhook.url)

    notify_blocked_cleanup(_failure_context(instance, blocked, notifier))
    [sent] = webhook.received
    assert sent["kind"] == "cleanup_blocked" and sent["plan_id"] == plan_id
    assert sent["run_id"] == second.run_id and sent["would_remove"] == 5
    link = unquote_plus(sent["approve_url"])
    assert f"plan_id: {plan_id}" in link and "/jobs/approve_cleanup/" in link
    assert sent["dagster_run_id"] == blocked.run_id and plan_id in sent["text"]

    # The same failure seen again (a later tick, a restarted daemon): nothing more is sent.
    notify_blocked_cleanup(_failure_context(instance, blocked, notifier))
    # A second cleanup of the same flush is a no-op naming the first; it fails on the same plan.
    again = cleanup.execute_in_process(
        instance=instance,
        run_config=cleanup_run_config(second.run_id),
        raise_on_error=False,
        tags=partition,
    )
    data = again.output_for_node("stale_projects_cleanup")
    assert data["already_done"] and data["claimed_by"] == f"dagster run {blocked.run_id}"
    assert data["plan_id"] == plan_id
    notify_blocked_cleanup(_failure_context(instance, again, notifier))
    assert len(webhook.received) == 1


def test_a_failed_webhook_marks_nothing_sent_so_the_next_tick_sends_it(
    env, instance, repo_tree, webhook
):
    assert enumerate_scopes(instance).success
    for child in repo_tree.iterdir():
        shutil.rmtree(child)
    second = enumerate_scopes(instance)
    partition = run_partition_tags_of(instance, second.run_id)
    blocked = defs.resolve_job_def("cleanup_projects").execute_in_process(
        instance=instance,
        run_config=cleanup_run_config(second.run_id),
        raise_on_error=False,
        tags=partition,
    )
    down_port = Webhook()
    down_port.close()  # a port nothing listens on any more
    down = Notifier(webhook_url=down_port.url, timeout_seconds=2)
    with pytest.raises(Exception):  # noqa: B017 - whatever httpx raises, the tick fails
        notify_blocked_cleanup(_failure_context(instance, blocked, down))
    notify_blocked_cleanup(_failure_context(instance, blocked, Notifier(webhook_url=webhook.url)))
    assert len(webhook.received) == 1


@op
def noop():
    return None


@job
def stand_in():
    """A Dagster run for the sensor to be about (the inventory runs are made by the store)."""
    noop()


def _config(tmp_path, repo_tree, body: str):
    path = tmp_path / "enum-pipeline.yaml"
    path.write_text(f"sources:\n  - kind: filesystem\n    roots: [{repo_tree}]\n{body}")
    return path


def test_a_scope_incomplete_more_than_the_configured_runs_is_notified_once(
    env, instance, repo_tree, webhook, tmp_path, monkeypatch
):
    monkeypatch.setenv(
        "ENUM_PIPELINE_CONFIG",
        str(_config(tmp_path, repo_tree, "notify:\n  stuck_after_runs: 2\n")),
    )
    notifier = Notifier(webhook_url=webhook.url)
    scope = "fs:/srv/src"

    def tick():
        run = stand_in.execute_in_process(instance=instance)
        context = build_run_status_sensor_context(
            sensor_name="notify_stuck_scopes",
            dagster_event=run.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(run.run_id),
            resources={"inventory": InventoryResource(), "notifier": notifier},
        )
        notify_stuck_scopes(context)

    run_once(env, {scope: ["a", "b"]})
    first_incomplete = None
    for n in range(4):  # incomplete in 1, 2 (not more than 2), 3 (notified), 4 (already)
        run_id, _ = run_once(env, {scope: ["a"]}, complete={scope: False})
        first_incomplete = first_incomplete or run_id
        tick()
        assert len(webhook.received) == (0 if n < 2 else 1), n
    [sent] = webhook.received
    assert sent["kind"] == "scope_stuck" and sent["scope"] == scope and sent["runs"] == 3
    assert sent["since_run"] == first_incomplete
    assert "stuck_after_runs=2" in sent["text"] and "incomplete (root unreadable)" in sent["text"]

    # read completely once, then stuck again: a new streak, a new notice
    run_once(env, {scope: ["a", "b"]})
    for _ in range(3):
        run_once(env, {scope: ["a"]}, complete={scope: False})
        tick()
    assert len(webhook.received) == 2 and webhook.received[1]["since_run"] != first_incomplete


def test_a_bad_threshold_names_its_key_and_file(tmp_path, repo_tree):
    path = _config(tmp_path, repo_tree, "notify:\n  stuck_after_runs: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert "notify.stuck_after_runs" in str(err.value) and str(path) in str(err.value)
    assert load_config_file(_config(tmp_path, repo_tree, "")).notify.stuck_after_runs == 3


def test_without_a_channel_nothing_is_sent_and_the_sensor_says_so(env, instance):
    assert Notifier().channels() == []
    assert Notifier(slack_token="x").channels() == []  # a token without a channel is not one
    assert Notifier(webhook_url="http://h", teams_webhook_url="http://t").channels() == [
        "webhook",
        "msteams",
    ]


def test_a_scope_stuck_between_runs_of_other_scopes_is_still_notified(
    env, instance, repo_tree, webhook, tmp_path, monkeypatch
):
    """One run per scope: the runs of other scopes neither count in a streak nor break it."""
    monkeypatch.setenv(
        "ENUM_PIPELINE_CONFIG",
        str(_config(tmp_path, repo_tree, "notify:\n  stuck_after_runs: 2\n")),
    )
    notifier = Notifier(webhook_url=webhook.url)
    stuck, fine = "fs:/srv/stuck", "fs:/srv/fine"

    def tick():
        run = stand_in.execute_in_process(instance=instance)
        notify_stuck_scopes(
            build_run_status_sensor_context(
                sensor_name="notify_stuck_scopes",
                dagster_event=run.get_run_success_event(),
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(run.run_id),
                resources={"inventory": InventoryResource(), "notifier": notifier},
            )
        )

    run_once(env, {stuck: ["a"], fine: ["b"]})
    for n in range(3):
        run_once(env, {stuck: ["a"]}, complete={stuck: False})
        tick()
        run_once(env, {fine: ["b"]})
        tick()
        assert len(webhook.received) == (0 if n < 2 else 1), n
    [sent] = webhook.received
    assert sent["scope"] == stuck and sent["runs"] == 3
