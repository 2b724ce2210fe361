"""Test helpers: synthetic records, one whole lifecycle, SQL-level fault injection, real git
repositories, PostgreSQL schemas. Fixtures stay in ``conftest.py``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from enum_pipeline import steps
from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.witness import Absence, Candidate, Confirmation, now
from enum_pipeline.store import CleanupPolicy, InventoryStore

SCOPE = "fs:/srv/src"


def rec(name: str, scope: str = SCOPE, **extra) -> ProjectRecord:
    """A filesystem-like record ``name`` under ``scope``."""
    root = scope.split(":", 1)[1]
    return ProjectRecord(
        project_key=f"fs:{root}/{name}",
        scope_key=scope,
        source_kind="filesystem",
        name=name.rsplit("/", 1)[-1],
        location=f"{root}/{name}",
        path=f"{root}/{name}",
        vcs="git",
        **extra,
    )


def key(name: str, scope: str = SCOPE) -> str:
    """The project key ``rec(name, scope)`` gets."""
    return rec(name, scope).project_key


def new_run_id() -> str:
    """A fresh run id, shaped like a Dagster run id."""
    return str(uuid.uuid4())


@dataclass
class StaticSource:
    """A source that yields fixed records and verdicts, scope by scope (no I/O)."""

    items: dict[str, tuple[list[ProjectRecord], ScopeVerdict]]
    kind: str = "filesystem"

    def scope_keys(self) -> list[str]:
        return list(self.items)

    def scan(self) -> Iterator[ProjectRecord | ScopeVerdict]:
        for records, verdict in self.items.values():
            yield from records
            yield verdict


class WorldWitness:
    """The witness of a test world: synthetic records have no real path or repository to look
    at, so the test says which projects still exist (``present``); every other candidate is
    confirmed gone. ``asked`` records every candidate it was shown."""

    def __init__(self, present: Iterable[str] = ()) -> None:
        self.present = set(present)
        self.asked: list[Candidate] = []

    def confirm(self, candidates) -> Iterator[Confirmation]:
        for c in candidates:
            self.asked.append(c)
            if c.project_key in self.present:
                yield Confirmation(c.project_key, Absence.PRESENT, "test world: exists", now())
            else:
                yield Confirmation(c.project_key, Absence.GONE, "test world: absent", now())


#: Confirms every candidate gone: for tests about what happens once absence is confirmed.
GONE = WorldWitness()


def run_source(store: InventoryStore, source, witness=None):
    """One completed run of one real ``source`` through the store (begin, stage, flush,
    verify, complete), then its cleanup with ``witness`` (default: ``GONE``); returns the
    source's verdict and the cleanup's result."""
    from enum_pipeline.scan import stage_sources

    run_id = new_run_id()
    summary = stage_sources(store, run_id, store.begin(run_id), [source])
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    result = store.safe_cleanup_old_projects(run_id, witness=GONE if witness is None else witness)
    return summary.verdicts[0], result


def run_once(
    store: InventoryStore,
    seen: dict[str, Iterable[str]],
    *,
    complete: dict[str, bool] | None = None,
    protected: dict[str, tuple[str, ...]] | None = None,
    cleanup: bool = True,
    policy: CleanupPolicy | None = None,
    run_id: str | None = None,
):
    """One whole run through the step layer (start, flush, verify, finish) with ``seen`` per
    scope, and (when ``cleanup``) the cleanup. Returns ``(run_id, cleanup_result_or_None)``."""
    run_id = run_id or new_run_id()
    items = {}
    for scope, names in seen.items():
        names = list(names)
        whole = (complete or {}).get(scope, True)
        verdict = ScopeVerdict(
            scope_key=scope,
            source_kind="filesystem",
            complete=whole,
            seen=len(names),
            reason=None if whole else "root unreadable",
            protected=(protected or {}).get(scope, ()),
        )
        items[scope] = ([rec(n, scope) for n in names], verdict)
    _, verified, finished = steps.run_through(store, run_id, [StaticSource(items)], policy=policy)
    assert verified.flush_succeeded, verified.error
    assert finished.status == "completed", finished.info.error
    result = store.safe_cleanup_old_projects(run_id, witness=GONE) if cleanup else None
    return run_id, result


@contextlib.contextmanager
def fail_on_sql(
    store: InventoryStore, needle: str, exc: type[Exception] = RuntimeError
) -> Iterator[list]:
    """Raise ``exc`` when a statement containing ``needle`` is about to run (a real mid-transaction
    failure on either backend). Yields the list of statements that were stopped."""
    stopped: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if needle.lower() in statement.lower():
            stopped.append(statement)
            raise exc(f"injected failure before: {statement[:60]}")

    sa.event.listen(store.engine, "before_cursor_execute", before)
    try:
        yield stopped
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", before)


_FAULTS = {
    "sqlite": {
        "abort_upsert": [
            "CREATE TRIGGER ep_fault_i BEFORE INSERT ON projects "
            "BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END",
            "CREATE TRIGGER ep_fault_u BEFORE UPDATE ON projects "
            "BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END",
        ],
        "lose_write": [
            "CREATE TRIGGER ep_fault_l AFTER INSERT ON projects WHEN NEW.name = '{name}' "
            "BEGIN DELETE FROM projects WHERE project_key = NEW.project_key; END",
        ],
    },
    "postgresql": {
        "abort_upsert": [
            "CREATE FUNCTION ep_fault() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'injected: disk full'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER ep_fault BEFORE INSERT OR UPDATE ON projects "
            "FOR EACH ROW EXECUTE FUNCTION ep_fault()",
        ],
        "lose_write": [
            "CREATE FUNCTION ep_fault() RETURNS trigger AS $$ BEGIN "
            "DELETE FROM projects WHERE project_key = NEW.project_key; RETURN NULL; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER ep_fault AFTER INSERT ON projects FOR EACH ROW "
            "WHEN (NEW.name = '{name}') EXECUTE FUNCTION ep_fault()",
        ],
    },
}
_CLEAR = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS ep_fault_i",
        "DROP TRIGGER IF EXISTS ep_fault_u",
        "DROP TRIGGER IF EXISTS ep_fault_l",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS ep_fault ON projects",
        "DROP FUNCTION IF EXISTS ep_fault",
    ],
}


def install_fault(url: str, kind: str, name: str = "") -> None:
    """Make the database itself fail the flush: ``abort_upsert`` raises on any write to
    ``projects``; ``lose_write`` silently drops the inserted row of project ``name``."""
    from enum_pipeline.store.engine import create_inventory_engine, ensure_schema

    engine = create_inventory_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        for stmt in _FAULTS[engine.dialect.name][kind]:
            conn.exec_driver_sql(stmt.replace("{name}", name))
    engine.dispose()


def clear_faults(url: str) -> None:
    """Remove every fault ``install_fault`` put in."""
    from enum_pipeline.store.engine import create_inventory_engine

    engine = create_inventory_engine(url)
    with engine.begin() as conn:
        for stmt in _CLEAR[engine.dialect.name]:
            conn.exec_driver_sql(stmt)
    engine.dispose()


def lease_holders(store: InventoryStore, run_id: str) -> list[int]:
    """Backend pids holding ``run_id``'s lease, read from ``pg_locks``."""
    lease = store.get_run(run_id).lease
    assert lease and lease.startswith("pg_advisory:")
    _, space, objid = lease.split(":")
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objsubid = 2 AND classid = (CAST(:space AS bigint) & 4294967295)::oid"
                    " AND objid = (CAST(:objid AS bigint) & 4294967295)::oid"
                ),
                {"space": int(space), "objid": int(objid)},
            ).scalars()
        )


def terminate_backends(store: InventoryStore, pids: list[int], wait: float = 60.0) -> None:
    """``pg_terminate_backend`` each pid and wait until the server has ended them."""
    with store.engine.connect() as conn:
        for pid in pids:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        # A new transaction each time: pg_stat_activity is a snapshot per transaction.
        with store.engine.connect() as conn:
            alive = conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:p)"), {"p": pids}
            ).scalar()
        if not alive:
            return
        time.sleep(0.01)
    raise AssertionError(f"backends {pids} still alive after {wait}s")


def verdict(
    scope: str,
    *,
    seen: int = 0,
    source_kind: str = "filesystem",
    complete: bool = True,
    reason: str | None = None,
    protected: tuple[str, ...] = (),
    identity: dict[str, Any] | None = None,
    coverage: dict[str, Any] | None = None,
    protected_reasons: dict[str, str] | None = None,
):
    """A scope verdict with identity, coverage and protected reasons."""
    return ScopeVerdict(
        scope_key=scope,
        source_kind=source_kind,
        complete=complete,
        seen=seen,
        reason=reason,
        protected=tuple(protected),
        identity=identity or {},
        coverage=coverage or {},
        protected_reasons=protected_reasons or {},
    )


def run_verdicts(
    store,
    seen: dict[str, Iterable],
    *,
    policy: CleanupPolicy | None = None,
    configured: Iterable[str] | None = None,
    verdicts: dict[str, dict] | None = None,
    cleanup: bool = True,
):
    """One whole run; ``seen`` maps a scope to names (filesystem) or records. Returns
    ``(run_id, cleanup_result)``."""
    run_id = new_run_id()
    store.begin(run_id, policy=policy, configured_scopes=configured)
    for scope, items in seen.items():
        records = [i if isinstance(i, ProjectRecord) else rec(i, scope) for i in items]
        store.stage(run_id, records)
        kind = records[0].source_kind if records else "filesystem"
        extra = {"source_kind": kind, **(verdicts or {}).get(scope, {})}
        store.end_scope(run_id, verdict(scope, seen=len(records), **extra))
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    return run_id, store.safe_cleanup_old_projects(run_id, witness=GONE) if cleanup else None


def pg_schema_url(pg_database) -> str:
    """A URL for a fresh, empty schema in the session's PostgreSQL database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    url = pg_database.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a real ``git`` command in ``cwd`` for a test fixture, isolated from the user's and the
    system's configuration; returns its stripped stdout (a failure fails the test)."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd if cwd.is_dir() else cwd.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    config = {
        "init.defaultBranch": "main",
        "user.name": "Test",
        "user.email": "test@example.invalid",
        "protocol.file.allow": "always",  # local submodules
        "gc.auto": "0",
    }
    cmd = ["git"] + [arg for k, v in config.items() for arg in ("-c", f"{k}={v}")] + list(args)
    out = subprocess.run(cmd, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def make_repo(path: Path, *, commit: bool = True, remote: str | None = None) -> Path:
    """A real ``git init`` repository at ``path`` with one commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    if remote:
        git(path, "remote", "add", "origin", remote)
    if commit:
        (path / "README.md").write_text(f"# {path.name}\n")
        git(path, "add", "README.md")
        git(path, "commit", "-q", "-m", "init")
    return path


def scope_partitions(instance, scope_keys: Iterable[str]) -> dict[str, str]:
    """Add ``scope_keys`` as scope partitions of ``instance`` (those missing); the tags of one
    run over them (a partition, or the range spanning them in the partitions' order)."""
    from enum_pipeline.defs.constants import SCOPES_PARTITIONS
    from enum_pipeline.defs.scopes import partition_keys, run_partition_tags

    keys = partition_keys(scope_keys)
    existing = set(instance.get_dynamic_partitions(SCOPES_PARTITIONS))
    instance.add_dynamic_partitions(SCOPES_PARTITIONS, [k for k in keys if k not in existing])
    ordered = [k for k in instance.get_dynamic_partitions(SCOPES_PARTITIONS) if k in set(keys)]
    return run_partition_tags(ordered)


def configured_scopes() -> list[str]:
    """The scope keys of the configuration in effect (``ENUM_PIPELINE_CONFIG`` / ``_ROOTS``)."""
    from enum_pipeline.config import load_config

    return [k for s in load_config().build_sources() for k in s.scope_keys()]


def enumerate_scopes(instance, scopes: Iterable[str] | None = None, *, defs=None, **kwargs):
    """``enumerate_projects`` executed in process over ``scopes`` (default: every configured
    scope) as one run; ``raise_on_error=False`` unless given."""
    if defs is None:
        from enum_pipeline.definitions import defs
    tags = scope_partitions(instance, configured_scopes() if scopes is None else scopes)
    kwargs.setdefault("raise_on_error", False)
    kwargs["tags"] = {**tags, **kwargs.get("tags", {})}
    return defs.resolve_job_def("enumerate_projects").execute_in_process(
        instance=instance, **kwargs
    )


def run_partition_tags_of(instance, dagster_run_id: str) -> dict[str, str]:
    """The partition (or range) tags of a Dagster run: those a cleanup of it runs with."""
    from enum_pipeline.defs.scopes import partition_tags_of

    return partition_tags_of(instance.get_run_by_id(dagster_run_id).tags)
