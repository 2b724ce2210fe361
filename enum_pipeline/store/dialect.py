"""What differs between SQLite and PostgreSQL, as one strategy object a store holds.

The insert construct (both have ``ON CONFLICT``), row locks (``FOR UPDATE`` on PostgreSQL; SQLite
has one write lock, taken by ``BEGIN IMMEDIATE``), bulk staging (PostgreSQL ``COPY`` into the
run's own partition; SQLite ``executemany``), how a run's staging goes (PostgreSQL drops the
partition; SQLite deletes the rows and reuses their pages) and whether runs hold a lease
(PostgreSQL advisory locks only).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from enum_pipeline.store import schema as t

STAGE_COLUMNS = [c.name for c in t.staged_projects.columns]


class RetryBatch(Exception):
    """The fast way turned a staged batch back; roll its transaction back and stage it again."""


_COLUMN_LIST = ", ".join(STAGE_COLUMNS)


def sqlite_time(value: datetime) -> str:
    """A timestamp as the store's SQLite columns hold it (naive UTC text, microseconds); a naive
    value is UTC already."""
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


def _hashed(table: sa.Table, time_value) -> list:
    return [
        time_value(table.c[name])
        if isinstance(table.c[name].type, t.UTCDateTime)
        else table.c[name]
        for name in t.HASHED_COLUMNS
    ]


class SQLiteDialect:
    """SQLite: no row locks, no leases, staging by ``executemany``."""

    has_leases = False
    #: how ``row_of`` renders a timestamp for ``stage_rows``
    stage_time = staticmethod(sqlite_time)

    def digest(self, table: sa.Table) -> sa.ColumnElement:
        """``content_hash`` of ``table``'s rows, in SQL: SHA-1 of ``json_array`` of the hashed
        columns (``enum_digest`` is registered on every connection, see engine.py)."""
        return sa.func.enum_digest(sa.func.json_array(*_hashed(table, lambda c: c)))

    def insert(self, table: sa.Table):
        """An INSERT that knows ``ON CONFLICT``."""
        return sqlite.insert(table)

    def for_update(self, stmt: sa.Select) -> sa.Select:
        """``stmt`` as is: the transaction's write lock already serialises writers."""
        return stmt

    def stage_rows(self, conn: Connection, run_id: str, rows: list[tuple]) -> int:
        """Insert staged rows (tuples in ``STAGE_COLUMNS`` order, JSON columns as text), first
        sighting of a key wins; returns how many were new."""
        cursor = conn.exec_driver_sql(
            f"INSERT INTO staged_projects ({_COLUMN_LIST}) "
            f"VALUES ({', '.join('?' * len(STAGE_COLUMNS))}) "
            "ON CONFLICT (run_id, project_key) DO NOTHING",
            rows,
        )
        inserted = cursor.rowcount
        return len(rows) if inserted is None or inserted < 0 else inserted

    def drop_staging_except(self, conn: Connection, keep: Iterable[str]) -> int:
        """Delete the staged rows of every run but ``keep`` (SQLite puts their pages on its
        free list and reuses them: no dead row versions); returns how many went."""
        s = t.staged_projects
        return conn.execute(sa.delete(s).where(s.c.run_id.not_in(list(keep)))).rowcount


class PostgreSQLDialect:
    """PostgreSQL: ``FOR UPDATE``, advisory-lock leases, staging by ``COPY``, a partition a run."""

    has_leases = True
    #: ``row_of``'s default: aware datetimes, which psycopg sends with their offset
    stage_time = None

    def digest(self, table: sa.Table) -> sa.ColumnElement:
        """``content_hash`` of ``table``'s rows, in SQL: MD5 of ``json_build_array`` of the
        hashed columns (timestamps at UTC, so the text never depends on the session's
        TimeZone or DateStyle; jsonb renders its keys in one canonical order)."""
        cols = _hashed(table, lambda c: sa.func.timezone("UTC", c))
        return sa.func.md5(sa.cast(sa.func.json_build_array(*cols), sa.Text))

    def __init__(self) -> None:
        # Runs whose staging met a duplicate key (their batches go the deduplicating way).
        self._stage_duplicates: set[str] = set()
        # Partitions this store made sure of. Pruning never drops an active run's partition,
        # and a run stages only while active (its row is locked by the same transaction), so
        # a partition once there stays for the run's life; one that went anyway (an operator's
        # DROP) is forgotten and made again.
        self._partitions: set[str] = set()

    def insert(self, table: sa.Table):
        """An INSERT that knows ``ON CONFLICT``."""
        return postgresql.insert(table)

    def for_update(self, stmt: sa.Select) -> sa.Select:
        """``stmt`` locking the rows it reads until the transaction ends."""
        return stmt.with_for_update()

    def stage_rows(self, conn: Connection, run_id: str, rows: list[tuple]) -> int:
        """COPY the batch into the run's partition of ``staged_projects``; returns how many rows
        were new.

        psycopg renders the rows in COPY's text format in C (``write_row``). Fast path: one
        COPY straight into the partition, which succeeds exactly when every key is new to the
        run, which is what the slow path would insert. It takes no savepoint: when it meets a
        duplicate key (or the partition is gone) it raises ``RetryBatch``, the caller rolls
        the batch's transaction back whole and stages the batch again, and this run's batches
        go the slow way from then on: COPY into a temporary table, then one INSERT … ON
        CONFLICT DO NOTHING (first sighting wins).
        """
        from psycopg import errors as pg_errors

        partition = t.staging_partition(run_id)
        if partition not in self._partitions:
            ensure_partition(conn, run_id)
            self._partitions.add(partition)
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cur:
            try:
                if run_id in self._stage_duplicates:
                    return _copy_deduplicated(cur, partition, rows)
                _copy_into(cur, partition, rows)
            except pg_errors.UniqueViolation as exc:
                self._stage_duplicates.add(run_id)
                raise RetryBatch(run_id) from exc
            except pg_errors.UndefinedTable as exc:
                self._partitions.discard(partition)
                raise RetryBatch(run_id) from exc
        return len(rows)

    def drop_staging_except(self, conn: Connection, keep: Iterable[str]) -> int:
        """Drop the partition of every run but ``keep`` (no dead rows left behind); returns
        the rows they held."""
        kept = {t.staging_partition(run_id) for run_id in keep}
        dropped = 0
        for name in staging_partitions(conn):
            if name in kept:
                continue
            dropped += conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()
            conn.exec_driver_sql(f'DROP TABLE "{name}"')
            self._partitions.discard(name)
        return dropped


def ensure_partition(conn: Connection, run_id: str) -> str:
    """The partition of ``staged_projects`` for ``run_id``, created if it does not exist yet."""
    name = t.staging_partition(run_id)
    if conn.exec_driver_sql(f"SELECT to_regclass('\"{name}\"')").scalar() is None:
        literal = run_id.replace("'", "''")
        conn.exec_driver_sql(
            f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF staged_projects '
            f"FOR VALUES IN ('{literal}')"
        )
    return name


def staging_partitions(conn: Connection) -> list[str]:
    """The names of the partitions ``staged_projects`` has (PostgreSQL)."""
    return list(
        conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'staged_projects'::regclass"
        ).scalars()
    )


def _copy_into(cur, table: str, rows: list[tuple]) -> None:
    with cur.copy(f'COPY "{table}" ({_COLUMN_LIST}) FROM STDIN') as copy:
        write = copy.write_row
        for row in rows:
            write(row)


_KEY = STAGE_COLUMNS.index("project_key")


def _copy_deduplicated(cur, partition: str, rows: list[tuple]) -> int:
    """The batch's first sighting of each key, COPYed into a temporary table, then inserted
    where the run has not staged the key yet; returns how many rows were new."""
    seen: set[str] = set()
    first = [r for r in rows if not (r[_KEY] in seen or seen.add(r[_KEY]))]
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _stage_batch "
        "(LIKE staged_projects INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    _copy_into(cur, "_stage_batch", first)
    cur.execute(
        f'INSERT INTO "{partition}" ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} '
        "FROM _stage_batch ON CONFLICT (run_id, project_key) DO NOTHING"
    )
    inserted = cur.rowcount
    cur.execute("DELETE FROM _stage_batch")
    return inserted


Dialect = SQLiteDialect | PostgreSQLDialect


def dialect_for(engine: Engine) -> Dialect:
    """The strategy for ``engine``'s database."""
    return PostgreSQLDialect() if engine.dialect.name == "postgresql" else SQLiteDialect()
