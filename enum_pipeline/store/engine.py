"""Engines for the inventory database, and schema migrations (Alembic) applied on first use."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

# Alembic is imported where it is used: a run on an up-to-date database never needs it.

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DEFAULT_SQLITE_PATH = Path(".enum_pipeline") / "inventory.sqlite"


def default_database_url() -> str:
    """``ENUM_PIPELINE_DATABASE_URL``, else a SQLite file under ``./.enum_pipeline/``."""
    url = os.environ.get("ENUM_PIPELINE_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{DEFAULT_SQLITE_PATH.resolve()}"


_SECRET_QUERY_KEY = re.compile(r"(?i)pass|pwd|secret|token|key|auth|credential")


def redact_database_url(url: str) -> str:
    """The URL with its password hidden, for logs and metadata.

    Both places a password can take are hidden: the user info (``user:pw@``) and the query
    (``?password=...``, ``sslpassword``, ``sslkey`` ...). An unparsable URL is not shown at all.
    """
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - whatever it is, it may hold a password
        return "<unparsable database URL>"
    query = {k: ("***" if _SECRET_QUERY_KEY.search(k) else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")  # the query's *** comes back percent-encoded


def create_inventory_engine(url: str) -> Engine:
    """An engine tuned for the store: SQLite in WAL mode with ``BEGIN IMMEDIATE`` transactions.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of every transaction, so two
    processes that read-then-write (begin, cleanup) serialise instead of failing late.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None
            dbapi_connection.create_function("enum_digest", 1, sqlite_digest, deterministic=True)
            cursor = dbapi_connection.cursor()
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def sqlite_digest(text: str | None) -> str | None:
    """``enum_digest(text)`` on SQLite: the SHA-1 of ``text`` in hex (``content_hash``; SQLite
    has no digest function of its own)."""
    if text is None:
        return None
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _enable_wal(cursor, timeout: float = 60.0) -> None:
    """Switch the database to WAL mode (persistent), retrying while another process holds it.

    The switch needs an exclusive lock and SQLite answers ``SQLITE_BUSY`` at once, without
    calling the busy handler, when several processes open a new database at the same moment.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration shipped with this version of enum_pipeline."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    if len(rows) > 1:
        raise RuntimeError(f"alembic_version has several heads: {sorted(rows)}")
    return rows[0] if rows else None


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (idempotent, serialised across processes)."""
    from alembic import command

    url = engine.url.render_as_string(hide_password=False)
    cfg = _alembic_config(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes starting on an empty database must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(8125001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(engine: Engine) -> None:
    """Bring the database to the newest schema if it is not there yet."""
    if current_revision(engine) != head_revision():
        upgrade_schema(engine)
