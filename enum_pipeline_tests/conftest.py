"""Shared fixtures: every store test runs on SQLite and on a real PostgreSQL server.

Helpers (functions a test calls) live in ``helpers.py``; only fixtures stay here.

PostgreSQL: ``ENUM_PIPELINE_TEST_PG_URL`` (default the local server, user postgres). One
database per test session, one schema per test. With ``CI=true`` an unreachable server is a
failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.helpers import git, make_repo, pg_schema_url

__all__ = ["git", "make_repo", "pg_schema_url"]  # helpers.py holds them; old imports still work

PG_ADMIN_URL = os.environ.get(
    "ENUM_PIPELINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but unreachable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unreachable ({reason}); set CI=true to make this a failure")


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"enum_pipeline_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as err:  # noqa: BLE001 - any connection failure means unreachable
        admin.dispose()
        _pg_unavailable(str(err).splitlines()[0])
    url = make_url(PG_ADMIN_URL).set(database=name)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """A fresh, empty inventory database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inventory.sqlite'}"
    return pg_schema_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def store(db_url):
    """An ``InventoryStore`` on a fresh database."""
    s = InventoryStore(db_url)
    yield s
    s.dispose()


@pytest.fixture
def repo_tree(tmp_path: Path) -> Path:
    """A folder holding five real git repositories (one in a nested group folder)."""
    root = tmp_path / "src"
    for name in ("alpha", "beta", "gamma", "group/delta", "group/epsilon"):
        make_repo(root / name)
    (root / "alpha" / "pyproject.toml").write_text("[project]\nname='alpha'\n")
    (root / "beta" / "package.json").write_text("{}\n")
    return root


@pytest.fixture
def dagster_pg_url():
    """A fresh PostgreSQL database for Dagster's own storage (psycopg2, as deployed), dropped
    afterwards: for the tests that run Dagster's queue daemon over PostgreSQL."""
    admin_url = os.environ.get(
        "ENUM_PIPELINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"enum_pipeline_dagster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def env(db_url, repo_tree, monkeypatch):
    """Point the code location at a fresh database and the test tree (``ENUM_PIPELINE_ROOTS``);
    the inventory store on it."""
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", str(repo_tree))
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)
    store = InventoryStore(db_url)
    yield store
    store.dispose()


@pytest.fixture
def instance():
    """A Dagster instance of its own (``instance_for_test``)."""
    from dagster._core.test_utils import instance_for_test

    with instance_for_test() as inst:
        yield inst
