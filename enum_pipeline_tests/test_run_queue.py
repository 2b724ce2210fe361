"""The run queue of ``dagster.yaml``, run for real: Dagster's ``QueuedRunCoordinatorDaemon``
ticks in-process over a PostgreSQL Dagster storage, and the default run launcher starts each
dequeued run as a subprocess of a real code server.

The runs are of a small job of the tests' own (``queue_job.py``), tagged by
``scope_run_tags`` for real sources: parallel runs of different scopes, one at a time per
scope, three at a time per code host and token, four in all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterRunStatus
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from enum_pipeline.config import parse_config
from enum_pipeline.defs.constants import SCOPE_TAG
from enum_pipeline.defs.placement import scope_run_tags

REPO = Path(__file__).resolve().parents[1]
LOCATION = "queue_test"
#: How long each run's op sleeps: longer than the spread of four run workers' start-up.
RUN_SECONDS = 12.0

pytestmark = pytest.mark.slow


def _scope_tags() -> dict[str, dict[str, str]]:
    """Run tags of four orgs on one GitHub token and of one local folder, by short name."""
    config = {
        "sources": [
            *({"kind": "github", "owner": org, "token_env": "GITHUB_TOKEN"} for org in "abcd"),
            {"kind": "filesystem", "roots": ["/srv/src"]},
        ]
    }
    sources = parse_config(config, "test").build_sources()
    names = ["a", "b", "c", "d", "fs"]
    return {
        name: scope_run_tags(source, source.scope_keys()[0])
        for name, source in zip(names, sources, strict=True)
    }


def _tick(daemon, context) -> None:
    list(daemon.run_iteration(context))


def _status(instance, run_id: str) -> DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def _wait_finished(instance, run_ids: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(instance.get_run_by_id(r).is_finished for r in run_ids):
            return
        time.sleep(0.5)
    raise AssertionError(
        f"runs not finished in {timeout}s: {[_status(instance, r) for r in run_ids]}"
    )


def test_the_queue_launches_scopes_in_parallel_one_per_scope(dagster_pg_url, tmp_path):
    queue = yaml.safe_load((REPO / "dagster.yaml").read_text())
    overrides = {
        "storage": {"postgres": {"postgres_url": dagster_pg_url}},
        "run_coordinator": queue["run_coordinator"],
        "concurrency": queue["concurrency"],
    }
    records = tmp_path / "records"
    records.mkdir()
    run_config = {
        "ops": {"record_run": {"config": {"folder": str(records), "seconds": RUN_SECONDS}}}
    }
    target = ModuleTarget(
        module_name="enum_pipeline_tests.queue_job",
        attribute="defs",
        working_directory=str(REPO),
        location_name=LOCATION,
    )
    tags = _scope_tags()
    with (
        instance_for_test(overrides=overrides) as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        request = context.create_request_context()
        location = request.get_code_location(LOCATION)
        repository = next(iter(location.get_repositories().values()))
        remote_job = repository.get_full_job("record_scope")
        from enum_pipeline_tests.queue_job import record_scope

        runs: dict[str, str] = {}
        for name in ["a", "a2", "b", "c", "d", "fs"]:
            run = instance.create_run_for_job(
                job_def=record_scope,
                run_config=run_config,
                tags=tags[name.rstrip("2")],
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.submit_run(run.run_id, request)
            runs[name] = run.run_id
        assert all(_status(instance, r) == DagsterRunStatus.QUEUED for r in runs.values())

        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        _tick(daemon, context)
        first = ["a", "b", "c", "fs"]
        for name in first:
            assert _status(instance, runs[name]) != DagsterRunStatus.QUEUED, name
        # a2: its scope is running; d: three runs already use its host and token
        assert _status(instance, runs["a2"]) == DagsterRunStatus.QUEUED
        assert _status(instance, runs["d"]) == DagsterRunStatus.QUEUED
        _tick(daemon, context)  # still held while the first four run
        assert _status(instance, runs["a2"]) == DagsterRunStatus.QUEUED
        assert _status(instance, runs["d"]) == DagsterRunStatus.QUEUED

        _wait_finished(instance, [runs[n] for n in first])
        _tick(daemon, context)
        _wait_finished(instance, [runs["a2"], runs["d"]])
        assert all(_status(instance, r) == DagsterRunStatus.SUCCESS for r in runs.values())

    done = {
        name: json.loads((records / f"{run_id}.json").read_text()) for name, run_id in runs.items()
    }
    # the first four ran at the same time, each in a process of its own
    assert max(done[n]["start"] for n in first) < min(done[n]["end"] for n in first)
    assert len({done[n]["pid"] for n in first}) == 4
    # the same scope never ran twice at once
    assert done["a2"]["start"] >= done["a"]["end"]
    assert done["a"]["tags"][SCOPE_TAG] == done["a2"]["tags"][SCOPE_TAG] == "github:github.com/a"
