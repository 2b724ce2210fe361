"""Scopes through the run queue (issue 21): a full enumeration of many code-host orgs through
Dagster's real run queue, against the slowest single org alone.

A loopback GitHub (the tests' fake, ``enum_pipeline_tests.fake_github``) holds ``--orgs`` orgs
of ``--repos`` repositories; every answer waits ``--latency`` seconds. The orgs are read with
four tokens (``--tokens``: separate tokens or installations, ``--orgs / --tokens`` orgs each),
so four runs may go at once under the queue's per-host-and-token limit (3).

Everything is the deployed path: Dagster's storage on PostgreSQL with the queue settings of
``dagster.yaml`` (``max_concurrent_runs`` 4, the tag limits), a real code server of
``enum_pipeline.definitions``, Dagster's own ``QueuedRunCoordinatorDaemon`` (ticked here every
``--tick`` seconds; the deployed daemon dequeues every ``dequeue_interval_seconds``, 5 s by
default) and the default run launcher (each run a process of its own), the inventory on
PostgreSQL. The schedule's run requests (``enumerate_projects_schedule``, evaluated for real)
are what is submitted. Modes, each on a fresh inventory schema:

* **single org**: ``--baseline`` orgs (one a token), each alone through the queue; the slowest
  is the baseline of every ratio;
* **grouped**: all orgs, ``scopes_per_run`` = ``parallel_sources`` = orgs a token (4 runs);
* **per scope**: all orgs, ``scopes_per_run: 1`` (one run per org);
* **one run**: one in-process run over every scope (``execute_in_process`` in a fresh process,
  its start-up included), ``parallel_sources`` 1 and 4;
* **grouped, one org failing**: as *grouped*, with one org's listing answering 502 on every
  page (retried, then its scope ends incomplete): when the others are in, and that they are.

Wall time runs from the first submit until the last run's end (Dagster's run record).
Usage::

    python bench/bench_queue.py            # 20 orgs x 500 repositories, 100 ms a page
    python bench/bench_queue.py --quick    # 8 orgs x 200, 50 ms
    python bench/bench_queue.py --modes grouped --baseline 1 --dequeue-threads off   # an A/B

PostgreSQL: ``ENUM_PIPELINE_BENCH_PG_URL`` (else ``ENUM_PIPELINE_TEST_PG_URL``, else the local
server, user postgres); two databases of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TARGET_RATIO = 1.5
MODES = ("grouped", "per-scope", "one-run", "failing")
LOCATION = "enum_pipeline"
TOKEN_ENV = "ENUM_BENCH_QUEUE_TOKEN_{}"


def _admin_url() -> str:
    return (
        os.environ.get("ENUM_PIPELINE_BENCH_PG_URL")
        or os.environ.get("ENUM_PIPELINE_TEST_PG_URL")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )


# ---------------------------------------------------------------------------- the fake host


def _app(latency: float):
    from enum_pipeline_tests.fake_codehosts import GitHubApp, Reply

    class SlowGitHub(GitHubApp):
        """Every answer after ``latency``; the listing of each org in ``failing`` answers 502."""

        failing: set[str] = set()

        def _listing_of(self, org: str, path: str) -> bool:
            owner = self.owners.get(org)
            return owner is not None and (
                f"/organizations/{owner.id}/repos" in path or f"/orgs/{org}/repos" in path
            )

        def route(self, req, host):
            path = req.path.split("?", 1)[0]
            if any(self._listing_of(org, path) for org in self.failing):
                reply = Reply.json(502, {"message": "injected: bad gateway"})
            else:
                reply = super().route(req, host)
            reply.delay = latency
            return reply

    return SlowGitHub(token=None)  # any token: one per group of orgs


# ---------------------------------------------------------------------------- databases


@dataclass
class Databases:
    """A database for Dagster's storage and one for the inventory (a schema a mode)."""

    admin: object
    dagster_url: str
    inventory_db: object
    names: list[str] = field(default_factory=list)

    @classmethod
    def create(cls) -> Databases:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        admin = sa.create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
        names = [f"enum_bench_queue_dagster_{tag}", f"enum_bench_queue_inventory_{tag}"]
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        base = make_url(_admin_url())
        dagster = base.set(drivername="postgresql+psycopg2", database=names[0])
        return cls(
            admin,
            dagster.render_as_string(hide_password=False),
            base.set(database=names[1]),
            names,
        )

    def fresh_schema(self) -> str:
        """A URL of a new, empty schema of the inventory database."""
        import sqlalchemy as sa

        schema = f"m_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(self.inventory_db)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine.dispose()
        url = self.inventory_db.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


# ---------------------------------------------------------------------------- one bench


@dataclass
class Result:
    mode: str
    wall: float
    ok: bool
    note: str = ""


class Bench:
    def __init__(self, args, host_url: str, app, dbs: Databases, folder: Path) -> None:
        self.args = args
        self.app = app
        self.dbs = dbs
        self.config_path = folder / "enum_pipeline.yaml"
        self.orgs = [f"org{i:02d}" for i in range(args.orgs)]
        self.per_token = -(-args.orgs // args.tokens)
        self.sources = [
            {
                "kind": "github",
                "owner": org,
                "base_url": host_url,
                "token_env": TOKEN_ENV.format(i // self.per_token),
            }
            for i, org in enumerate(self.orgs)
        ]
        os.environ["ENUM_PIPELINE_CONFIG"] = str(self.config_path)
        os.environ.pop("ENUM_PIPELINE_ROOTS", None)
        for t in range(args.tokens):
            os.environ[TOKEN_ENV.format(t)] = f"bench-only-token-{t}-NOT-REAL"
        self.inventory_url = dbs.fresh_schema()
        # the code server and its run workers read the inventory URL from this environment:
        # each mode gets a fresh schema under this one name (see ``fresh_inventory``)
        os.environ["ENUM_PIPELINE_DATABASE_URL"] = self.inventory_url
        self.configure()

    def configure(self, **top) -> None:
        import yaml

        self.config_path.write_text(yaml.safe_dump({"sources": self.sources, **top}))

    def fresh_inventory(self):
        """Empty the inventory schema (drop and create it again), and a store on it."""
        import sqlalchemy as sa

        from enum_pipeline.store import InventoryStore

        schema = self.inventory_url.rsplit("search_path%3D", 1)[-1].split("&")[0]
        engine = sa.create_engine(self.dbs.inventory_db)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine.dispose()
        return InventoryStore(self.inventory_url)

    # -- the queue ------------------------------------------------------------------------

    def schedule_requests(self, instance, **top):
        """The run requests of one tick of the real schedule over the configuration ``top``."""
        from dagster import build_schedule_context

        from enum_pipeline.definitions import defs
        from enum_pipeline.defs.resources import InventoryResource
        from enum_pipeline.defs.schedules import enumerate_projects_schedule

        self.configure(**top)
        context = build_schedule_context(
            instance=instance,
            resources={"inventory": InventoryResource()},
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime.now(UTC),
        )
        return enumerate_projects_schedule.evaluate_tick(context).run_requests

    def through_queue(self, instance, workspace, requests, timeout: float = 900):
        """Submit ``requests`` to the queue, tick the daemon until every run ended; the wall
        time from the first submit to the last end, and the run records by run id."""
        from dagster._core.storage.dagster_run import RunsFilter
        from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
            QueuedRunCoordinatorDaemon,
        )

        from enum_pipeline.definitions import defs
        from enum_pipeline.defs.constants import ENUMERATE_JOB

        daemon = QueuedRunCoordinatorDaemon(interval_seconds=self.args.tick)
        request_context = workspace.create_request_context()
        location = request_context.get_code_location(LOCATION)
        repository = next(iter(location.get_repositories().values()))
        remote_job = repository.get_full_job(ENUMERATE_JOB)
        job = defs.get_job_def(ENUMERATE_JOB)
        start = time.time()
        run_ids = []
        for request in requests:
            run = instance.create_run_for_job(
                job_def=job,
                run_config=request.run_config,
                tags=request.tags,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.submit_run(run.run_id, request_context)
            run_ids.append(run.run_id)
        self.submitted_s = time.time() - start  # the runs created (with their plans), queued
        deadline = time.monotonic() + timeout
        while True:
            list(daemon.run_iteration(workspace))
            records = instance.get_run_records(RunsFilter(run_ids=run_ids))
            if len(records) == len(run_ids) and all(r.dagster_run.is_finished for r in records):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs not finished in {timeout}s")
            time.sleep(self.args.tick)
        by_id = {r.dagster_run.run_id: r for r in records}
        wall = max(r.end_time for r in records) - start
        return wall, start, by_id

    def scopes_read(self, store, run_ids) -> dict[str, tuple[bool, str | None, str]]:
        """Scope key -> (complete, reason, run id) of every scope the runs read."""
        return {
            s.scope_key: (s.complete, s.reason, run_id)
            for run_id in run_ids
            for s in store.scopes(run_id)
        }

    def queued_mode(
        self, instance, workspace, name: str, *, fresh: bool = True, **top
    ) -> tuple[Result, dict]:
        if fresh:
            store = self.fresh_inventory()
        else:  # the inventory of the mode before: the next tick of the same schedule
            from enum_pipeline.store import InventoryStore

            store = InventoryStore(self.inventory_url)
        requests = self.schedule_requests(instance, **top)
        wall, start, records = self.through_queue(instance, workspace, requests)
        read = self.scopes_read(store, records)
        expected = len(self.orgs) - len(self.app.failing)
        complete = sum(1 for ok, _, _ in read.values() if ok)
        ok = complete == expected and store.count_projects() == expected * self.args.repos
        ok = ok and all(r.dagster_run.status.value == "SUCCESS" for r in records.values())
        store.dispose()
        phases = _phases(instance, records, start, self.submitted_s)
        note = f"{len(requests)} runs, {complete}/{len(read)} complete; {phases}"
        return Result(name, wall, ok, note), {
            "start": start,
            "records": records,
            "read": read,
            "requests": requests,
        }

    # -- one in-process run ---------------------------------------------------------------

    def one_run(self, parallel: int) -> Result:
        """``enumerate_projects`` over every scope, in process, in a fresh child process."""
        store = self.fresh_inventory()
        self.configure(parallel_sources=parallel)
        spec = {"dagster_url": self.dbs.dagster_url}
        start = time.time()
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        wall = time.time() - start
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise RuntimeError(f"one run (parallel_sources {parallel}) exited {out.returncode}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        ok = child["success"] and store.count_projects() == len(self.orgs) * self.args.repos
        store.dispose()
        name = (
            f"one in-process run over the {len(self.orgs)} scopes, `parallel_sources: {parallel}`"
        )
        return Result(name, wall, ok, f"the run alone {child['run_s']:.1f} s, process start incl.")


def _phases(instance, records, start: float, submitted: float) -> str:
    """Where the queued runs' time went: creating and queueing them (``submitted`` seconds),
    submit to launch (the queue), launch to the worker's start (a process: start-up, imports,
    the instance), the worker's start to its end."""
    stats = [instance.get_run_stats(run_id) for run_id in records]
    launched = sorted(s.launch_time - start for s in stats)
    started = sorted(s.start_time - s.launch_time for s in stats)
    ran = sorted(s.end_time - s.start_time for s in stats)

    def spread(values: list[float]) -> str:
        return f"{values[0]:.1f}" if len(values) == 1 else f"{values[0]:.1f}–{values[-1]:.1f}"

    return (
        f"queued in {submitted:.1f} s, launched {spread(launched)} s after submit, "
        f"workers up {spread(started)} s after launch, ran {spread(ran)} s"
    )


def child(spec: dict) -> None:
    """One ``enumerate_projects`` run over every configured scope, in this process."""
    from dagster._core.test_utils import instance_for_test

    from enum_pipeline.definitions import defs
    from enum_pipeline_tests.helpers import configured_scopes, scope_partitions

    overrides = {"storage": {"postgres": {"postgres_url": spec["dagster_url"]}}}
    with instance_for_test(overrides=overrides) as instance:
        tags = scope_partitions(instance, configured_scopes())
        job = defs.resolve_job_def("enumerate_projects")
        t = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        run_s = time.perf_counter() - t
    print(json.dumps({"success": result.success, "run_s": run_s}))


# ---------------------------------------------------------------------------- main

#: This terminal, whatever file descriptors 1 and 2 are pointed at meanwhile.
_TERMINAL = os.fdopen(os.dup(1), "w", buffering=1)


def say(text: str) -> None:
    _TERMINAL.write(text + "\n")


@contextmanager
def _output_to(path: Path):
    """Point file descriptors 1 and 2 at ``path`` (inherited by every process started
    meanwhile), and back."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def run(args) -> list[Result]:
    import yaml
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.workspace.load_target import ModuleTarget

    from enum_pipeline_tests.fake_codehosts import FakeCodeHost

    app = _app(args.latency)
    orgs = [f"org{i:02d}" for i in range(args.orgs)]
    for org in orgs:
        app.add_owner(org, args.repos)
    queue = yaml.safe_load((Path(ROOT) / "dagster.yaml").read_text())
    dbs = Databases.create()
    results: list[Result] = []
    with ExitStack() as stack:
        stack.callback(dbs.drop)
        host = stack.enter_context(FakeCodeHost(app))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_queue_")))
        bench = Bench(args, host.url, app, dbs, folder)
        coordinator = queue["run_coordinator"]
        if args.dequeue_threads != "yaml":  # an A/B of dagster.yaml's dequeue_use_threads
            config = {"dequeue_use_threads": args.dequeue_threads == "on"}
            coordinator = {**coordinator, "config": config}
        overrides = {
            "storage": {"postgres": {"postgres_url": dbs.dagster_url}},
            "run_coordinator": coordinator,
            "concurrency": queue["concurrency"],
        }
        instance = stack.enter_context(instance_for_test(overrides=overrides))
        target = ModuleTarget(
            module_name="enum_pipeline.definitions",
            attribute="defs",
            working_directory=ROOT,
            location_name=LOCATION,
        )
        # the code server and its run workers (their DEBUG event logs) write to a file, as
        # deployed daemons write to their journal, not to this terminal
        log = Path(tempfile.gettempdir()) / f"bench_queue_{os.getpid()}.log"
        stack.enter_context(_output_to(log))
        workspace = stack.enter_context(create_test_daemon_workspace_context(target, instance))
        say(f"  (the code server's and the runs' output: {log})")
        per_run = bench.per_token

        # (a) the baseline: some orgs, one a token, each alone through the queue
        store = bench.fresh_inventory()
        all_single = bench.schedule_requests(instance)
        picks = [i * per_run for i in range(args.tokens)][: args.baseline]
        singles = {}
        for i in picks:
            wall, start, records = bench.through_queue(instance, workspace, [all_single[i]])
            ok = all(r.dagster_run.status.value == "SUCCESS" for r in records.values())
            singles[orgs[i]] = (wall, ok, _phases(instance, records, start, bench.submitted_s))
            say(f"  single {orgs[i]}: {wall:.2f} s ({singles[orgs[i]][2]})")
        store.dispose()
        slowest = max(singles, key=lambda o: singles[o][0])
        listed = ", ".join(f"{o} {w:.1f}" for o, (w, _, _) in singles.items())
        results.append(
            Result(
                f"slowest single org alone through the queue ({slowest}; of {listed})",
                singles[slowest][0],
                all(ok for _, ok, _ in singles.values()),
                singles[slowest][2],
            )
        )

        # (b) grouped
        if "grouped" in args.modes:
            grouped, _ = bench.queued_mode(
                instance,
                workspace,
                f"queue, `scopes_per_run: {per_run}`, `parallel_sources: {per_run}` (grouped)",
                scopes_per_run=per_run,
                parallel_sources=per_run,
            )
            results.append(grouped)
            say(f"  {grouped.mode}: {grouped.wall:.2f} s")

        # (c) one run per scope
        if "per-scope" in args.modes:
            per_scope, _ = bench.queued_mode(
                instance, workspace, "queue, `scopes_per_run: 1` (one run per scope)"
            )
            results.append(per_scope)
            say(f"  {per_scope.mode}: {per_scope.wall:.2f} s")

        # (d) one in-process run
        for parallel in (1, 4) if "one-run" in args.modes else ():
            one = bench.one_run(parallel)
            results.append(one)
            say(f"  {one.mode}: {one.wall:.2f} s")
        if "failing" not in args.modes:
            return results

        # (e) grouped, one org's listing failing
        failing = orgs[per_run + per_run // 2]  # in the middle of the second token's orgs

        def with_failing(name: str, *, fresh: bool = True):
            app.failing = {failing}
            try:
                return bench.queued_mode(
                    instance,
                    workspace,
                    name,
                    fresh=fresh,
                    scopes_per_run=per_run,
                    parallel_sources=per_run,
                )
            finally:
                app.failing = set()

        failed, detail = with_failing(
            f"(b) with {failing}'s listing failing (502 every page) — every run ended"
        )
        read, records = detail["read"], detail["records"]
        failing_scope = next(k for k in read if k.endswith(f"/{failing}"))
        failing_ok, failing_reason, failing_run = read[failing_scope]
        others = {k: v for k, v in read.items() if k != failing_scope}
        others_ok = len(others) == len(orgs) - 1 and all(ok for ok, _, _ in others.values())
        ends = {run_id: r.end_time - detail["start"] for run_id, r in records.items()}
        failed.ok = others_ok and not failing_ok
        failed.note = (
            f"{failing} incomplete ({(failing_reason or '')[:50]}), its run "
            f"{records[failing_run].dagster_run.status.value}"
        )
        results.append(failed)
        apart = {k: v for k, v in others.items() if v[2] != failing_run}
        results.append(
            Result(
                f"(b) with {failing} failing — the {len(apart)} orgs of the other runs in",
                max(t for r, t in ends.items() if r != failing_run),
                all(ok for ok, _, _ in apart.values()),
            )
        )
        results.append(
            Result(
                f"(b) with {failing} failing — all {len(orgs) - 1} other orgs in",
                max(ends.values()),
                others_ok,
                f"{sum(1 for ok, _, _ in others.values() if ok)}/{len(orgs) - 1} complete; "
                "its run-mates are flushed when its retries end",
            )
        )
        say(f"  {failed.mode}: {failed.wall:.2f} s")

        # (f) the next tick: the org whose last reading failed runs alone
        nxt, detail = with_failing(
            f"(b) the next tick, {failing} still failing: it runs alone — every run ended",
            fresh=False,
        )
        read, records = detail["read"], detail["records"]
        failing_run = read[failing_scope][2]
        others = {k: v for k, v in read.items() if k != failing_scope}
        ends = {run_id: r.end_time - detail["start"] for run_id, r in records.items()}
        nxt.ok = all(ok for ok, _, _ in others.values()) and not read[failing_scope][0]
        alone = [k for k, v in read.items() if v[2] == failing_run] == [failing_scope]
        nxt.note = f"{len(records)} runs; {failing} alone in its run: {alone}"
        results.append(nxt)
        results.append(
            Result(
                f"(b) the next tick — all {len(orgs) - 1} other orgs in",
                max(t for r, t in ends.items() if r != failing_run),
                all(ok for ok, _, _ in others.values()) and alone,
                f"{sum(1 for ok, _, _ in others.values() if ok)}/{len(orgs) - 1} complete",
            )
        )
        say(f"  {nxt.mode}: {nxt.wall:.2f} s")
    return results


def table(results: list[Result], args, load: tuple[float, float]) -> str:
    base = results[0].wall
    lines = [
        f"=== queue: {args.orgs} orgs x {args.repos} repositories, {args.latency * 1000:.0f} ms "
        f"a page, {args.tokens} tokens; load average {load[0]:.2f} before, {load[1]:.2f} after",
        "",
        "| mode | wall s | × slowest single org |",
        "|---|---|---|",
    ]
    for r in results:
        mark = "" if r.ok else " **(not all in)**"
        note = f" — {r.note}" if r.note else ""
        lines.append(f"| {r.mode}{note}{mark} | {r.wall:.2f} | {r.wall / base:.2f}× |")
    grouped = next((r for r in results if r.mode.endswith("(grouped)")), None)
    if grouped is not None:
        verdict = "met" if grouped.wall / base <= TARGET_RATIO else "missed"
        lines += [
            "",
            f"Target: the full enumeration through the queue within {TARGET_RATIO}× the slowest "
            f"single org: {grouped.wall / base:.2f}× (grouped) — **{verdict}**",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orgs", type=int, default=20)
    ap.add_argument("--repos", type=int, default=500, help="repositories an org")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds before every answer")
    ap.add_argument("--tokens", type=int, default=4, help="tokens the orgs are shared among")
    ap.add_argument("--baseline", type=int, default=4, help="orgs measured alone (one a token)")
    ap.add_argument("--tick", type=float, default=0.25, help="seconds between daemon ticks")
    ap.add_argument("--quick", action="store_true", help="8 orgs x 200, 50 ms (CI)")
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="modes besides the single-org baseline (default: all)",
    )
    ap.add_argument(
        "--dequeue-threads",
        choices=["yaml", "on", "off"],
        default="yaml",
        help="the daemon's dequeue_use_threads: as dagster.yaml says, or forced (an A/B)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.quick:
        args.orgs, args.repos, args.latency = 8, 200, 0.05
    before = os.getloadavg()[0]
    results = run(args)
    say(table(results, args, (before, os.getloadavg()[0])))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
