"""Test helpers: synthetic records, one whole lifecycle, SQL-level fault injection."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
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
    """One whole run: begin, stage ``seen`` per scope, end scopes, flush, verify, complete,
    and (when ``cleanup``) the cleanup. Returns ``(run_id, cleanup_result_or_None)``."""
    run_id = run_id or new_run_id()
    store.begin(run_id)
    for scope, names in seen.items():
        names = list(names)
        store.stage(run_id, [rec(n, scope) for n in names])
        store.end_scope(
            run_id,
            ScopeVerdict(
                scope_key=scope,
                source_kind="filesystem",
                complete=(complete or {}).get(scope, True),
                seen=len(names),
                reason=None if (complete or {}).get(scope, True) else "root unreadable",
                protected=(protected or {}).get(scope, ()),
            ),
        )
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    result = store.safe_cleanup_old_projects(run_id, policy) if cleanup else None
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
