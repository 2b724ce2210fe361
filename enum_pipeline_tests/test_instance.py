"""The Dagster instance the CLI opens: on the embedded default its SQLite storages reuse their
connections, write the same files Dagster's own classes read, and step aside when the home's
``dagster.yaml`` chooses a storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, asset, materialize
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from enum_pipeline.instance import (
    ReusingSqliteEventLogStorage,
    ReusingSqliteRunStorage,
    open_instance,
    storage_overrides,
)


@asset
def first() -> int:
    return 1


@asset
def second(first: int) -> int:
    return first + 1


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "dagster_home"
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


@pytest.fixture
def connections(monkeypatch):
    """Counts the DBAPI connections every SQLAlchemy engine opens from now on."""
    opened: list[str] = []

    def count(dbapi_connection, record) -> None:
        opened.append(str(dbapi_connection))

    sa.event.listen(sa.engine.Engine, "connect", count)
    yield opened
    sa.event.remove(sa.engine.Engine, "connect", count)


def _run(instance: DagsterInstance, times: int) -> list[str]:
    return [materialize([first, second], instance=instance).run_id for _ in range(times)]


def _connections_per_run(open_it, connections: list[str]) -> float:
    """How many more connections two more runs open, per run, on one instance."""
    instance = open_it()
    try:
        _run(instance, 1)
        before = len(connections)
        _run(instance, 2)
        return (len(connections) - before) / 2
    finally:
        instance.dispose()


def test_the_default_storage_reuses_one_connection_per_file(home, connections):
    with DagsterInstance.from_config(str(home)) as dagster_own:
        assert type(dagster_own.run_storage) is SqliteRunStorage
    with open_instance(str(home)) as instance:
        assert isinstance(instance.run_storage, ReusingSqliteRunStorage)
        assert isinstance(instance.event_log_storage, ReusingSqliteEventLogStorage)

    by_dagster = _connections_per_run(lambda: DagsterInstance.from_config(str(home)), connections)
    ours = _connections_per_run(lambda: open_instance(str(home)), connections)
    # Dagster's classes open a connection per call (dozens a run); ours keep theirs, and a run
    # adds only its own event-log file (one to create and stamp it, one kept).
    assert by_dagster > 20, by_dagster
    assert ours <= 2, ours


def test_what_the_cli_instance_wrote_dagster_reads(home):
    instance = open_instance(str(home))
    try:
        run_ids = _run(instance, 2)
    finally:
        instance.dispose()
    with DagsterInstance.from_config(str(home)) as dagster_own:
        assert type(dagster_own.event_log_storage) is SqliteEventLogStorage
        assert {r.run_id for r in dagster_own.get_runs()} == set(run_ids)
        for run_id in run_ids:
            assert dagster_own.get_run_by_id(run_id).is_success
            assert any(e.is_dagster_event for e in dagster_own.all_logs(run_id))
        latest = dagster_own.get_latest_materialization_event(AssetKey("second"))
        assert latest is not None and latest.run_id == run_ids[-1]


def test_nested_connections_neither_wait_nor_share(home):
    instance = open_instance(str(home))
    try:
        storage = instance.run_storage
        with storage.connect() as outer, storage.connect() as inner:
            assert outer.connection.dbapi_connection is not inner.connection.dbapi_connection
            assert inner.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        instance.dispose()


def test_a_configured_storage_is_left_as_configured(home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {elsewhere}\n")
    assert storage_overrides(str(home)) == {}
    instance = open_instance(str(home))
    try:
        assert type(instance.run_storage) is SqliteRunStorage
        materialize([first], instance=instance)
    finally:
        instance.dispose()
    assert (elsewhere / "history" / "runs.db").exists()


def _shard_facts(path: Path) -> tuple:
    """(schema, alembic revision, journal mode) of one event-log file."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        schema = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return schema, revision, mode


def test_a_run_file_the_cli_instance_makes_is_the_one_dagster_makes(home, tmp_path):
    """A new run's event-log file, made with the migration scripts read once a process, has
    Dagster's tables and indexes, its alembic head and WAL, like one Dagster's class makes."""
    with DagsterInstance.from_config(str(home)) as dagster_own:
        theirs = _run(dagster_own, 1)[0]
    instance = open_instance(str(home))
    try:
        ours = _run(instance, 2)
    finally:
        instance.dispose()
    runs = home / "history" / "runs"
    expected = _shard_facts(runs / f"{theirs}.db")
    assert expected[1] and expected[2] == "wal"
    for run_id in ours:
        assert _shard_facts(runs / f"{run_id}.db") == expected


@asset
def talks() -> int:
    print("stdout of a step")
    return 1


def test_cli_runs_capture_no_compute_logs_unless_the_home_configures_them(home, tmp_path):
    """A command's output is on its terminal: the CLI's instance starts no ``tail`` mirrors
    (nothing is written under the compute-log folder); a home that configures ``compute_logs``
    keeps them."""
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager

    def talk_with(manager: type) -> None:
        instance = open_instance(str(home))
        try:
            assert isinstance(instance.compute_log_manager, manager)
            assert materialize([talks], instance=instance).success
        finally:
            instance.dispose()

    talk_with(NoOpComputeLogManager)
    assert not any((home / "storage").rglob("*.out"))  # where Dagster's default would write

    logs = tmp_path / "logs"
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "compute_logs:\n  module: dagster.core.storage.local_compute_log_manager\n"
        f"  class: LocalComputeLogManager\n  config:\n    base_dir: {logs}\n"
    )
    talk_with(LocalComputeLogManager)
    assert any("stdout of a step" in p.read_text() for p in logs.rglob("*.out"))
