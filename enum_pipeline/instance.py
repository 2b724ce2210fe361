"""The Dagster instance a CLI command opens: ``$DAGSTER_HOME`` as configured, and on the embedded
default storage (SQLite, nothing configured under ``storage``) run and event-log storages that
reuse their connections for the life of the process.

Dagster's SQLite storages build a new engine and open a new connection for every read and write
of the instance. Closing the last connection of a WAL database checkpoints it, so each of the
~130 events of an ``enum-pipeline run`` paid a commit, a checkpoint and their fsyncs; a one-off
process that writes three runs back to back spends most of its Dagster time there. These
subclasses keep one connection per database file instead (more only while one is in use), on the
same files, schema and statements: the webserver and the daemon keep Dagster's own classes on
them, and read what the CLI wrote like any run. Durability is Dagster's: every write is still
committed before the call returns.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import QueuePool

#: The configuration keys that choose Dagster's storage; with any of them set, the instance is
#: opened exactly as configured.
STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def _engine(conn_string: str, timeout: float) -> Engine:
    """An engine that keeps one connection open and opens more only while it is in use (a
    nested or concurrent caller never waits for, or shares, a connection in a transaction)."""
    return create_engine(
        conn_string,
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=-1,
        connect_args={"timeout": timeout, "check_same_thread": False},
    )


@functools.cache
def _event_log_scripts() -> ScriptDirectory:
    """Dagster's migration scripts, read once a process. Dagster reads them (90 files) twice
    for every run's new event-log file: 73 ms a new file, against 37 ms with them read once
    (measured in one process, 3 rounds of 5 files each)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


class ReusingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one engine per shard (the index and each run's file), and
    a new run's file made with the migration scripts read once a process."""

    def __init__(self, base_dir: str, inst_data=None) -> None:
        self._engines: dict[str, Engine] = {}
        self._engines_lock = threading.Lock()
        self._tables: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _shard_engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is None:
                url = self.conn_string_for_shard(shard)
                engine = self._engines[shard] = _engine(url, SQLITE_BUSY_TIMEOUT_SECONDS)
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._shard_engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        """Dagster's ``_initdb`` with the scripts read once: a file at the scripts' head is
        left as it is, a new run's file gets WAL, then its tables and the head stamp in one
        transaction. A new index
        shard (made in Dagster's constructor), a file at another revision and a file another
        process is making at the same moment take Dagster's own way."""
        if not for_index_shard:
            scripts = _event_log_scripts()
            try:
                with engine.connect() as conn:
                    migrations = MigrationContext.configure(conn)
                    if migrations.get_current_revision() == scripts.as_revision_number("head"):
                        return
                    if not engine.dialect.has_table(conn, "event_logs"):
                        # WAL first, then every table, index and the stamp in one transaction:
                        # sqlite3 runs each CREATE outside a transaction otherwise, a commit
                        # and its fsyncs each (97 ms against 20 ms a new file, median of 15).
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                        conn.exec_driver_sql("BEGIN")
                        SqlEventLogStorageMetadata.create_all(conn)
                        migrations.stamp(scripts, "head")
                        conn.commit()
                        return
            except (DatabaseError, sqlite3.DatabaseError):
                pass  # another process making it at the same moment: Dagster's way retries
        super()._initdb(engine, for_index_shard=for_index_shard)

    def has_table(self, table_name: str) -> bool:
        """Whether the index shard has ``table_name`` (asked at every asset event; a table
        once there stays, so a yes is remembered)."""
        if table_name in self._tables:
            return True
        engine = self._shard_engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def dispose(self) -> None:
        super().dispose()
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class ReusingSqliteRunStorage(SqliteRunStorage):
    """``SqliteRunStorage`` with one engine for the process."""

    def __init__(self, conn_string: str, inst_data=None) -> None:
        super().__init__(conn_string, inst_data)
        self._reused = _engine(conn_string, 5.0)  # sqlite3's default, as Dagster's class has

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._reused.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._reused.dispose()


#: What a CLI command's runs capture of their steps' stdout and stderr: nothing. Dagster's
#: default manager mirrors each step's streams through ``tail`` processes (started, then waited
#: for: 40-50 ms of a run's time here); a command's output is on its terminal already. A home
#: whose ``dagster.yaml`` configures ``compute_logs`` keeps its choice.
NO_COMPUTE_LOG_CAPTURE = {
    "module": "dagster._core.storage.noop_compute_log_manager",
    "class": "NoOpComputeLogManager",
    "config": {},
}


def _home_config(home: str) -> dict | None:
    """``home``'s ``dagster.yaml`` as plain YAML (``{}`` when there is none), or None when it
    cannot be read: Dagster validates the file when it opens the instance, and a file it
    refuses is left to it to report."""
    try:
        with open(os.path.join(home, "dagster.yaml"), encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else {}


def storage_overrides(home: str) -> dict:
    """The instance configuration that puts the reusing storages on ``home``'s default SQLite
    files, or ``{}`` when ``home``'s ``dagster.yaml`` chooses a storage itself."""
    config = _home_config(home)
    if config is None or any(config.get(key) for key in STORAGE_KEYS):
        return {}
    module = __name__
    return {
        "run_storage": {
            "module": module,
            "class": ReusingSqliteRunStorage.__name__,
            "config": {"base_dir": os.path.join(home, "history", "")},
        },
        "event_log_storage": {
            "module": module,
            "class": ReusingSqliteEventLogStorage.__name__,
            "config": {"base_dir": os.path.join(home, "history", "runs", "")},
        },
    }


def open_instance(home: str) -> DagsterInstance:
    """The Dagster instance of ``home`` (a ``DAGSTER_HOME``) for a CLI command: its SQLite
    storages reusing their connections when ``home`` is on the embedded default, and no
    capture of the steps' stdout and stderr unless ``home`` configures ``compute_logs``."""
    overrides = storage_overrides(home)
    config = _home_config(home)
    if config is not None and not config.get("compute_logs"):
        overrides["compute_logs"] = NO_COMPUTE_LOG_CAPTURE
    ref = InstanceRef.from_dir(home, overrides=overrides)
    return DagsterInstance.from_ref(ref)
