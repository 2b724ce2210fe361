"""What differs between SQLite and PostgreSQL, as one strategy object a store holds.

The insert construct (both have ``ON CONFLICT``), row locks (``FOR UPDATE`` on PostgreSQL; SQLite
has one write lock, taken by ``BEGIN IMMEDIATE``), bulk staging (PostgreSQL ``COPY``; SQLite
``executemany``) and whether runs hold a lease (PostgreSQL advisory locks only).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from enum_pipeline.store import schema as t

STAGE_COLUMNS = ["run_id", "project_key", *t.PROJECT_DATA_COLUMNS]
_MARKERS_AT = STAGE_COLUMNS.index("markers")
_ATTRIBUTES_AT = STAGE_COLUMNS.index("attributes")
_NULLABLE_JSON_AT = [STAGE_COLUMNS.index(c) for c in ("topics", "remotes")]


class SQLiteDialect:
    """SQLite: no row locks, no leases, staging by ``executemany``."""

    has_leases = False

    def insert(self, table: sa.Table):
        """An INSERT that knows ``ON CONFLICT``."""
        return sqlite.insert(table)

    def for_update(self, stmt: sa.Select) -> sa.Select:
        """``stmt`` as is: the transaction's write lock already serialises writers."""
        return stmt

    def stage_rows(self, conn: Connection, run_id: str, rows: list[dict[str, Any]]) -> int:
        """Insert staged rows, first sighting of a key wins; returns how many were new."""
        stmt = self.insert(t.staged_projects).on_conflict_do_nothing(
            index_elements=["run_id", "project_key"]
        )
        inserted = conn.execute(stmt, rows).rowcount
        if inserted is None or inserted < 0:
            inserted = len(rows)
        return inserted


class PostgreSQLDialect:
    """PostgreSQL: ``FOR UPDATE``, advisory-lock leases, staging by ``COPY``."""

    has_leases = True

    def __init__(self) -> None:
        # Runs whose staging met a duplicate key (skip the direct-COPY attempt for them).
        self._stage_duplicates: set[str] = set()

    def insert(self, table: sa.Table):
        """An INSERT that knows ``ON CONFLICT``."""
        return postgresql.insert(table)

    def for_update(self, stmt: sa.Select) -> sa.Select:
        """``stmt`` locking the rows it reads until the transaction ends."""
        return stmt.with_for_update()

    def stage_rows(self, conn: Connection, run_id: str, rows: list[dict[str, Any]]) -> int:
        """COPY the batch into ``staged_projects``; returns how many rows were new.

        Fast path: one COPY straight into the table under a savepoint; it succeeds exactly when
        every key is new to the run (no duplicates), which is what the slow path would insert.
        On a duplicate key the savepoint is rolled back and the batch goes the slow way: COPY
        into a temporary table, then one INSERT … ON CONFLICT DO NOTHING (first sighting wins).
        After one duplicate, the rest of that run's batches go the slow way directly.
        """
        values = _copy_values(rows)
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cur:
            if run_id not in self._stage_duplicates and self._copy_direct(cur, run_id, values):
                return len(values)
            return _copy_deduplicated(cur, values)

    def _copy_direct(self, cur, run_id: str, values: list[list[Any]]) -> bool:
        """COPY straight into ``staged_projects``; False (rolled back) on a duplicate key."""
        from psycopg import errors as pg_errors

        cur.execute("SAVEPOINT enum_stage_copy")
        try:
            _copy_into(cur, "staged_projects", values)
        except pg_errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT enum_stage_copy")
            self._stage_duplicates.add(run_id)
            return False
        cur.execute("RELEASE SAVEPOINT enum_stage_copy")
        return True


def _copy_values(rows: list[dict[str, Any]]) -> list[list[Any]]:
    from psycopg.types.json import Jsonb

    values = []
    for row in rows:
        value = list(map(row.__getitem__, STAGE_COLUMNS))
        value[_MARKERS_AT] = Jsonb(value[_MARKERS_AT])
        value[_ATTRIBUTES_AT] = Jsonb(value[_ATTRIBUTES_AT])
        for i in _NULLABLE_JSON_AT:
            if value[i] is not None:
                value[i] = Jsonb(value[i])
        values.append(value)
    return values


def _copy_into(cur, table: str, values: list[list[Any]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
        for value in values:
            copy.write_row(value)


def _copy_deduplicated(cur, values: list[list[Any]]) -> int:
    column_list = ", ".join(STAGE_COLUMNS)
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _stage_batch "
        "(LIKE staged_projects INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    _copy_into(cur, "_stage_batch", values)
    cur.execute(
        f"INSERT INTO staged_projects ({column_list}) "
        f"SELECT DISTINCT ON (run_id, project_key) {column_list} "
        "FROM _stage_batch ON CONFLICT (run_id, project_key) DO NOTHING"
    )
    inserted = cur.rowcount
    cur.execute("DELETE FROM _stage_batch")
    return inserted


Dialect = SQLiteDialect | PostgreSQLDialect


def dialect_for(engine: Engine) -> Dialect:
    """The strategy for ``engine``'s database."""
    return PostgreSQLDialect() if engine.dialect.name == "postgresql" else SQLiteDialect()
