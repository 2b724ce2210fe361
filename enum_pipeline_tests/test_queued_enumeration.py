"""Scopes as partitions through Dagster's own run queue, for real: the project's code location
served by a real code server, ``QueuedRunCoordinatorDaemon`` ticking over a PostgreSQL Dagster
storage with the project's queue limits, the default launcher starting each run as a process of
its own, and the inventory on PostgreSQL. Four orgs on a loopback GitHub, one run per scope,
with faults: an org whose API fails, and a run worker killed outright (SIGKILL) mid-scan.
Nothing is lost, the failing scope does not hold the others back, and a second wave removes
exactly the repositories confirmed deleted."""

from __future__ import annotations

import os
import signal
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

from enum_pipeline.config import load_config_file
from enum_pipeline.defs.constants import ENUMERATE_JOB, SCOPES_PARTITIONS
from enum_pipeline.defs.placement import scope_run_tags
from enum_pipeline.defs.scopes import partition_key, run_partition_tags
from enum_pipeline.sources.witness import SourceWitness
from enum_pipeline.store import InventoryStore, utcnow
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, GitHubApp, Reply
from enum_pipeline_tests.helpers import pg_schema_url

REPO = Path(__file__).resolve().parents[1]
LOCATION = "enum_pipeline"
TOKEN_ENV = "ENUM_TEST_QUEUE_TOKEN"
TOKEN = "test-only-queue-token-NOT-REAL-0021"
ORGS = ["alpha", "beta", "gamma", "delta"]
PER_ORG = 150

pytestmark = pytest.mark.slow


class Faulty(GitHubApp):
    """``gamma``'s listing answers 404 while ``gamma_down``; while ``slow``, every page takes
    a second (so runs overlap, and delta's worker can be killed mid-scan)."""

    gamma_down = False
    slow = True

    def _listing_of(self, org: str, path: str) -> bool:
        owner = self.owners.get(org)
        return owner is not None and (f"/{owner.id}/repos" in path or f"/orgs/{org}/repos" in path)

    def route(self, req, host):
        path = req.path.split("?", 1)[0]
        if self.gamma_down and self._listing_of("gamma", path):
            return Reply.json(404, {"message": "injected: gamma is gone from this token"})
        reply = super().route(req, host)
        if self.slow and any(self._listing_of(org, path) for org in ORGS):
            reply.delay = 1.0
        return reply


def _launch(instance, context, keys: list[str], pipeline) -> dict[str, str]:
    """One queued run per scope of the enumeration job, tagged as the schedule tags them."""
    request = context.create_request_context()
    location = request.get_code_location(LOCATION)
    repository = next(iter(location.get_repositories().values()))
    remote_job = repository.get_full_job(ENUMERATE_JOB)
    from enum_pipeline.definitions import defs

    job = defs.get_job_def(ENUMERATE_JOB)
    by_scope = {k: s for s in pipeline.build_sources() for k in s.scope_keys()}
    runs = {}
    for key in keys:
        tags = {**scope_run_tags(by_scope[key], key), **run_partition_tags([partition_key(key)])}
        run = instance.create_run_for_job(
            job_def=job,
            tags=tags,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        instance.submit_run(run.run_id, request)
        runs[key] = run.run_id
    return runs


def _drain(instance, context, daemon, run_ids, on_tick=None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        list(daemon.run_iteration(context))
        if on_tick is not None:
            on_tick()
        if all(instance.get_run_by_id(r).is_finished for r in run_ids):
            return
        time.sleep(0.5)
    states = {r: instance.get_run_by_id(r).status for r in run_ids}
    raise AssertionError(f"runs not finished in {timeout}s: {states}")


def test_parallel_scope_runs_through_the_queue_lose_nothing(
    dagster_pg_url, pg_database, tmp_path, monkeypatch
):
    app = Faulty(token=TOKEN)
    for org in ORGS:
        app.add_owner(org, PER_ORG)
    inventory_url = pg_schema_url(pg_database)
    queue = yaml.safe_load((REPO / "dagster.yaml").read_text())
    overrides = {
        "storage": {"postgres": {"postgres_url": dagster_pg_url}},
        "run_coordinator": queue["run_coordinator"],
        "concurrency": queue["concurrency"],
    }
    with FakeCodeHost(app) as host:
        config = tmp_path / "enum_pipeline.yaml"
        sources = [
            {"kind": "github", "owner": org, "base_url": host.url, "token_env": TOKEN_ENV}
            for org in ORGS
        ]
        config.write_text(yaml.safe_dump({"sources": sources}))
        for name, value in {
            "ENUM_PIPELINE_CONFIG": str(config),
            "ENUM_PIPELINE_DATABASE_URL": inventory_url,
            TOKEN_ENV: TOKEN,
        }.items():
            monkeypatch.setenv(name, value)
        pipeline = load_config_file(config)
        keys = [k for s in pipeline.build_sources() for k in s.scope_keys()]
        store = InventoryStore(inventory_url)
        target = ModuleTarget(
            module_name="enum_pipeline.definitions",
            attribute="defs",
            working_directory=str(REPO),
            location_name=LOCATION,
        )
        with (
            instance_for_test(overrides=overrides) as instance,
            create_test_daemon_workspace_context(target, instance) as context,
        ):
            instance.add_dynamic_partitions(SCOPES_PARTITIONS, [partition_key(k) for k in keys])
            daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

            # Wave 1: delta's worker is killed outright (SIGKILL) while it scans; the run
            # monitor would then mark its Dagster run failed: the test does it for it.
            runs = _launch(instance, context, keys, pipeline)
            alpha, beta, gamma, delta = keys
            killed: list[int] = []
            most_active = [0]

            def kill_delta() -> None:
                active = [r for r in store.runs(20) if r.status == "active"]
                most_active[0] = max(most_active[0], len(active))
                for run in active:
                    if killed or delta not in (run.scopes or []) or not run.pid:
                        continue
                    if (utcnow() - run.started_at).total_seconds() > 1.5:  # mid-scan
                        os.kill(run.pid, signal.SIGKILL)
                        killed.append(run.pid)
                        instance.report_run_failed(instance.get_run_by_id(run.run_id))

            _drain(instance, context, daemon, list(runs.values()), on_tick=kill_delta)
            status = {k: instance.get_run_by_id(r).status for k, r in runs.items()}
            assert killed, "delta's run was never seen active"
            for key in (alpha, beta, gamma):
                assert status[key] == DagsterRunStatus.SUCCESS, key
            assert status[delta] == DagsterRunStatus.FAILURE
            assert store.count_projects() == 3 * PER_ORG
            assert most_active[0] >= 2  # runs over disjoint scopes were active at once

            # Wave 2: three of alpha's repositories deleted; gamma's listing now fails.
            app.slow, app.gamma_down = False, True
            deleted = app.owners["alpha"].repos[10:13]
            for repo in deleted:
                app.delete("alpha", repo["id"])
            runs = _launch(instance, context, keys, pipeline)
            _drain(instance, context, daemon, list(runs.values()))
            for key in (alpha, beta, delta):
                assert instance.get_run_by_id(runs[key]).status == DagsterRunStatus.SUCCESS, key
            (gamma_read,) = store.scopes(runs[gamma])
            assert not gamma_read.complete and "404" in (gamma_read.reason or "")
            assert store.get_run(runs[delta]).status == "completed"
            assert store.count_projects() == 4 * PER_ORG  # delta in; gamma's rows all kept

            witness = SourceWitness(pipeline.build_sources())
            removed = []
            for run_id in runs.values():
                if store.get_run(run_id).status == "completed":
                    result = store.safe_cleanup_old_projects(run_id, witness=witness)
                    removed += result.removed_keys
            host_name = pipeline.build_sources()[0].host
            assert sorted(removed) == sorted(f"github:{host_name}:{r['id']}" for r in deleted)
            assert store.count_projects() == 4 * PER_ORG - 3
            generations = [store.get_run(r).generation for r in runs.values()]
            assert len(set(generations)) == len(generations)
