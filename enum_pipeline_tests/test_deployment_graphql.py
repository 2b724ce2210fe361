"""The server deployment: ``deploy/dagster.postgres.yaml`` on a real PostgreSQL server.

- The instance config validates, keeps every connection parameter in the environment and
  runs ``enumerate_projects`` in process under SQLAlchemy 2.1 (fast).
- End to end (slow): a real ``dagster-daemon`` and ``dagster-webserver`` on that instance,
  ``enumerate_projects`` launched through the webserver's GraphQL API, the daemon's sensor
  ``cleanup_after_confirmed_flush`` starting ``cleanup_projects``, and the results checked in
  both databases (the inventory and Dagster's own storage).

PostgreSQL: ``ENUM_PIPELINE_TEST_PG_URL`` (default the local server, user postgres). With
``CI=true`` an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from dagster import AssetKey, DagsterInstance, QueuedRunCoordinator
from dagster_postgres import PostgresRunStorage
from sqlalchemy.engine import URL, make_url

from enum_pipeline.defs.constants import SCOPES_PARTITIONS
from enum_pipeline.defs.scopes import PARTITION_TAG, partition_key
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline_tests.helpers import enumerate_scopes, make_repo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.postgres.yaml"
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "ENUM_PIPELINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

LOCATION = "enum_pipeline"
REPOSITORY = "__repository__"
SENSOR = "cleanup_after_confirmed_flush"
REPO_NAMES = {"alpha", "beta", "gamma"}

# The machine may have 2 busy cores: be generous, and measure.
STARTUP_TIMEOUT = 120
RUN_TIMEOUT = 180
CLEANUP_TIMEOUT = 300
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _pg_unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but unreachable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unreachable ({reason}); set CI=true to make this a failure")


@dataclass(frozen=True)
class PgDatabases:
    """A fresh Dagster storage database and a fresh inventory database on one server."""

    dagster: URL
    inventory: URL

    def dagster_env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables ``deploy/dagster.postgres.yaml`` reads."""
        url = self.dagster
        return {
            "DAGSTER_PG_USERNAME": url.username or "postgres",
            "DAGSTER_PG_PASSWORD": url.password or "",
            "DAGSTER_PG_HOST": url.host or "127.0.0.1",
            "DAGSTER_PG_DB": url.database,
            "DAGSTER_PG_PORT": str(url.port or 5432),
        }

    def inventory_url(self) -> str:
        """``ENUM_PIPELINE_DATABASE_URL`` of the inventory (psycopg 3)."""
        return self.inventory.render_as_string(hide_password=False)


@pytest.fixture
def pg() -> Iterator[PgDatabases]:
    """Two fresh databases (Dagster storage, inventory), dropped at the end."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {"dagster": f"ep_dagster_{tag}", "inventory": f"ep_inventory_{tag}"}
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as err:  # noqa: BLE001 - any connection failure means unreachable
        admin.dispose()
        _pg_unavailable(str(err).splitlines()[0])
    base = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg")
    try:
        yield PgDatabases(
            dagster=base.set(database=names["dagster"]),
            inventory=base.set(database=names["inventory"]),
        )
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _query(url: URL | str, sql: str, **params) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    return home


def _source_tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for name in sorted(REPO_NAMES):
        make_repo(root / name)
    return root


def _assert_inventory(pg: PgDatabases, run_id: str) -> None:
    rows = _query(pg.inventory, "SELECT name, last_confirmed_run_id, run_id FROM projects")
    assert {r.name for r in rows} == REPO_NAMES
    assert {r.last_confirmed_run_id for r in rows} == {run_id}
    state = _query(
        pg.inventory,
        "SELECT status, flush_succeeded, confirmed_count FROM run_state WHERE run_id = :r",
        r=run_id,
    )
    assert [(s.status, s.flush_succeeded, s.confirmed_count) for s in state] == [
        ("completed", True, len(REPO_NAMES))
    ]


def _dagster_runs(pg: PgDatabases) -> dict[str, tuple[str, str]]:
    """Dagster's own ``runs`` table in PostgreSQL: run id -> (job, status)."""
    rows = _query(pg.dagster, "SELECT run_id, pipeline_name, status FROM runs")
    return {r.run_id: (r.pipeline_name, r.status) for r in rows}


# --- the instance config ----------------------------------------------------------------


def test_postgres_yaml_reads_every_connection_parameter_from_env():
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    expected = {
        "username": "DAGSTER_PG_USERNAME",
        "password": "DAGSTER_PG_PASSWORD",
        "hostname": "DAGSTER_PG_HOST",
        "db_name": "DAGSTER_PG_DB",
        "port": "DAGSTER_PG_PORT",
    }
    assert {k: db[k] for k in expected} == {k: {"env": v} for k, v in expected.items()}
    assert "postgres_url" not in config["storage"]["postgres"]
    # psycopg 3 (plain `postgresql` under SQLAlchemy 2.1) breaks dagster-postgres' NOTIFY.
    assert db["scheme"] == "postgresql+psycopg2"
    # the run queue's limits (per scope, per host and token, one cleanup) are the project's
    project = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["concurrency"] == project["concurrency"]
    assert config["run_coordinator"] == project["run_coordinator"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] is True
    assert config["telemetry"]["enabled"] is False


def test_postgres_yaml_runs_enumerate_projects_in_process(pg, tmp_path, monkeypatch):
    home = _dagster_home(tmp_path)
    for name, value in pg.dagster_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", str(_source_tree(tmp_path)))
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", pg.inventory_url())
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)

    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert make_url(instance.run_storage.postgres_url).get_driver_name() == "psycopg2"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_monitoring_enabled
        result = enumerate_scopes(instance)
        assert result.success
        run_id = result.run_id
        assert instance.get_run_by_id(run_id).is_success
        flush = instance.get_latest_materialization_event(AssetKey("projects"))
        assert flush.asset_materialization.metadata["flush_succeeded"].value is True
    finally:
        instance.dispose()

    _assert_inventory(pg, run_id)
    assert _dagster_runs(pg)[run_id] == ("enumerate_projects", "SUCCESS")
    assert not (home / "history" / "runs.db").exists(), "SQLite run storage was used"


# --- end to end: daemon + webserver + GraphQL ----------------------------------------------

REPOSITORIES_QUERY = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on PythonError { message }
  }
}
"""

SENSOR_QUERY = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { status } }
    ... on PythonError { message }
  }
}
"""

START_SENSOR_MUTATION = """
mutation ($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN_MUTATION = """
mutation ($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

ADD_PARTITION_MUTATION = """
mutation ($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

ADDED = ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")

BACKFILL_MUTATION = """
mutation ($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query ($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status runs(limit: 10) { runId status } }
    ... on PythonError { message }
  }
}
"""

RUN_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
}
"""

RUNS_QUERY = """
query ($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message }
  }
}
"""


class GraphQL:
    """A minimal client for the webserver's ``/graphql`` endpoint."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def __call__(self, query: str, **variables) -> dict:
        response = self.http.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def close(self) -> None:
        self.http.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@contextlib.contextmanager
def _process_group(args: list[str], env: dict, log: Path) -> Iterator[subprocess.Popen]:
    """Start ``args`` in its own session; always kill the whole process group at the end
    (the daemon's and the webserver's code servers and run workers are in it too)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            for sig, grace in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)


def _dump_logs(logs: list[Path], limit: int = 20_000) -> None:
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        print(f"\n===== {log.name} (last {limit} chars) =====\n{text[-limit:]}")


def _wait(what: str, timeout: float, probe, procs=(), interval: float = 1.0):
    """Poll ``probe()`` until it returns a truthy value; fail on timeout or a dead process."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[0]} exited with {proc.returncode} while waiting {what}")
        try:
            value = probe()
        except (httpx.HTTPError, AssertionError) as err:
            value, last_error = None, err
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting {what} (last error: {last_error!r})")


def _runs(gql: GraphQL, **filter_) -> list[dict]:
    data = gql(RUNS_QUERY, filter=filter_)["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


@pytest.mark.slow
def test_daemon_and_webserver_on_postgres_enumerate_then_clean_up(pg, tmp_path):
    home = _dagster_home(tmp_path)
    env = {
        **os.environ,
        **pg.dagster_env(),
        "DAGSTER_HOME": str(home),
        "ENUM_PIPELINE_ROOTS": str(_source_tree(tmp_path)),
        "ENUM_PIPELINE_DATABASE_URL": pg.inventory_url(),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ENUM_PIPELINE_CONFIG", None)
    port = _free_port()
    logs = [tmp_path / "dagster-daemon.log", tmp_path / "dagster-webserver.log"]
    daemon_cmd = [_binary("dagster-daemon"), "run", "-w", "workspace.yaml"]
    web_cmd = [
        _binary("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml",
    ]  # fmt: skip
    gql = GraphQL(f"http://127.0.0.1:{port}")
    timings: dict[str, float] = {}
    try:
        with (
            _process_group(daemon_cmd, env, logs[0]) as daemon,
            _process_group(web_cmd, env, logs[1]) as web,
        ):
            procs = (daemon, web)
            t0 = time.monotonic()
            _wait(
                "for the webserver",
                STARTUP_TIMEOUT,
                lambda: gql.http.get("/server_info").status_code == 200,
                procs,
            )

            def enumerate_job_loaded():
                data = gql(REPOSITORIES_QUERY)["repositoriesOrError"]
                assert data["__typename"] == "RepositoryConnection", data
                return [
                    (n["location"]["name"], n["name"])
                    for n in data["nodes"]
                    if "enumerate_projects" in {j["name"] for j in n["jobs"]}
                ]

            located = _wait("for the code location", STARTUP_TIMEOUT, enumerate_job_loaded, procs)
            assert located == [(LOCATION, REPOSITORY)]
            timings["startup"] = time.monotonic() - t0

            selector = {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "sensorName": SENSOR,
            }
            sensor = gql(SENSOR_QUERY, selector=selector)["sensorOrError"]
            assert sensor["__typename"] == "Sensor", sensor
            if sensor["sensorState"]["status"] != "RUNNING":
                print(f"sensor {SENSOR} was {sensor['sensorState']['status']}; starting it")
                started = gql(START_SENSOR_MUTATION, selector=selector)["startSensor"]
                assert started["sensorState"]["status"] == "RUNNING", started

            # The scope's partition, as the UI's "Add partition" (or the sync sensor) adds it.
            repository = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
            key = partition_key(FilesystemSource.scope_key_for(env["ENUM_PIPELINE_ROOTS"]))
            added = gql(
                ADD_PARTITION_MUTATION, selector=repository, name=SCOPES_PARTITIONS, key=key
            )
            # the daemon's sync_scope_partitions may have added it already
            assert added["addDynamicPartition"]["__typename"] in ADDED, added

            t1 = time.monotonic()
            launched = gql(
                LAUNCH_RUN_MUTATION,
                executionParams={
                    "selector": {**repository, "jobName": "enumerate_projects"},
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": PARTITION_TAG, "value": key}]},
                },
            )["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]

            def run_finished():
                run = gql(RUN_QUERY, runId=run_id)["runOrError"]
                assert run["__typename"] == "Run", run
                return run["status"] if run["status"] in FINISHED else None

            status = _wait("for enumerate_projects", RUN_TIMEOUT, run_finished, procs)
            assert status == "SUCCESS", f"enumerate_projects ended {status}"
            timings["enumeration_run"] = time.monotonic() - t1

            t2 = time.monotonic()
            cleanup_filter = {
                "pipelineName": "cleanup_projects",
                "tags": [{"key": "enum_pipeline/enumeration_run", "value": run_id}],
            }

            def cleanup_finished():
                runs = _runs(gql, **cleanup_filter)
                done = [r for r in runs if r["status"] in FINISHED]
                return done[0]["status"] if done else None

            status = _wait(
                f"for {SENSOR} to start and finish cleanup_projects",
                CLEANUP_TIMEOUT,
                cleanup_finished,
                procs,
                interval=2.0,
            )
            assert status == "SUCCESS", f"cleanup_projects ended {status}"
            timings["sensor_to_cleanup"] = time.monotonic() - t2
            cleanup_runs = _runs(gql, **cleanup_filter)
            assert len(cleanup_runs) == 1, cleanup_runs
            cleanup_run_id = cleanup_runs[0]["runId"]
            _assert_inventory(pg, run_id)

            # Materialize on the enumeration's asset page, the lineage or Materialize all is,
            # for partitioned assets, a backfill: launched as the UI does, run by the daemon.
            t3 = time.monotonic()
            enumeration = ("scanned_projects", "projects", "run_state")
            backfill = gql(
                BACKFILL_MUTATION,
                backfillParams={
                    "assetSelection": [{"path": [name]} for name in enumeration],
                    "partitionNames": [key],
                },
            )["launchPartitionBackfill"]
            assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

            def backfill_done():
                data = gql(BACKFILL_QUERY, backfillId=backfill["backfillId"])
                data = data["partitionBackfillOrError"]
                assert data["__typename"] == "PartitionBackfill", data
                runs = data["runs"]
                return data if runs and all(r["status"] in FINISHED for r in runs) else None

            done = _wait("for the backfill", RUN_TIMEOUT + 60, backfill_done, procs, interval=2.0)
            assert [r["status"] for r in done["runs"]] == ["SUCCESS"], done
            backfill_run_id = done["runs"][0]["runId"]
            timings["backfill"] = time.monotonic() - t3
    except BaseException:
        _dump_logs(logs)
        raise
    finally:
        gql.close()

    print(
        "\ndeployment timings: "
        + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items())
    )

    _assert_inventory(pg, backfill_run_id)
    cleanups = _query(pg.inventory, "SELECT status FROM cleanups WHERE run_id = :r", r=run_id)
    assert len(cleanups) == 1
    assert cleanups[0].status in ("done", "noop")

    runs = _dagster_runs(pg)
    assert runs[run_id] == ("enumerate_projects", "SUCCESS")
    assert runs[cleanup_run_id] == ("cleanup_projects", "SUCCESS")
    assert runs[backfill_run_id] == ("__ASSET_JOB", "SUCCESS")
    assert not (home / "history" / "runs.db").exists(), "SQLite run storage was used"
