"""Schema migrations (Alembic) on SQLite and PostgreSQL: first use, the CLI, idempotence,
downgrade/upgrade, step-by-step upgrades of a database that holds data, and agreement between
the migrations and ``enum_pipeline/store/schema.py``.

Written for any number of revisions: the step-by-step test walks whatever the script directory
holds, oldest to newest, so it keeps working (and starts to bite) when revision 0002 arrives.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline.store import CleanupPolicy, InventoryStore
from enum_pipeline.store import schema as t
from enum_pipeline.store.engine import (
    _alembic_config,
    create_inventory_engine,
    current_revision,
    head_revision,
    upgrade_schema,
)
from enum_pipeline_tests.helpers import (
    SCOPE,
    fail_on_sql,
    key,
    new_run_id,
    pg_schema_url,
    rec,
    run_once,
)

OTHER = "fs:/srv/other"
CLI = Path(sys.executable).with_name("enum-pipeline")
TABLES = {table.name for table in t.metadata.sorted_tables}


def _revisions() -> list[str]:
    """Every revision, oldest first; the history must be a single line."""
    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    revs = list(reversed(list(script.walk_revisions())))
    assert revs and revs[0].down_revision is None
    for older, newer in zip(revs, revs[1:], strict=False):
        assert newer.down_revision == older.revision, "migration history must be linear"
    assert revs[-1].revision == head_revision()
    return [r.revision for r in revs]


def _alembic(engine: Engine, fn, revision: str) -> None:
    """Run an Alembic command (``command.upgrade`` / ``command.downgrade``) on ``engine``."""
    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _cli(db_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENUM_PIPELINE_DATABASE_URL": db_url}
    return subprocess.run(
        [str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _fill(store: InventoryStore) -> dict[str, str]:
    """Rows in every table through the store API: completed runs, a cleanup with history and a
    restore, a blocked cleanup, a failed run with staged rows. Returns the run ids by role."""
    first, _ = run_once(store, {SCOPE: ["a", "b", "c", "d"], OTHER: ["x", "y"]})
    cleaned, result = run_once(store, {SCOPE: ["a", "b"], OTHER: ["x", "y"]})
    assert result.removed_keys == [key("c"), key("d")]
    assert sorted(store.restore(cleaned)) == [key("c"), key("d")]  # history: restored rows
    _, blocked = run_once(store, {SCOPE: ["a", "b", "c", "d"], OTHER: []})
    assert blocked.status == "blocked"  # emptying OTHER is held back
    failed = new_run_id()
    store.begin(failed)
    store.stage(failed, [rec("a"), rec("e")])
    store.end_scope(failed, ScopeVerdict(SCOPE, "filesystem", True, 2))
    with fail_on_sql(store, "INSERT INTO projects"), pytest.raises(RuntimeError):
        store.flush(failed)
    assert store.fail(failed, "flush failed")
    return {"first": first, "cleaned": cleaned, "failed": failed}


# --------------------------------------------------------------------------- first use, CLI


def test_fresh_database_is_brought_to_head_on_first_use(db_url):
    engine = create_inventory_engine(db_url)
    assert current_revision(engine) is None
    assert not _tables(engine) & TABLES
    store = InventoryStore(db_url)
    assert current_revision(store.engine) == head_revision()
    assert _tables(store.engine) >= TABLES
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(t.inventory)).all() == [(1, 0)]
    run_once(store, {SCOPE: ["a"]})
    InventoryStore(db_url).dispose()  # a second opening changes nothing
    assert store.project_keys() == {key("a")}
    store.dispose()
    engine.dispose()


def _open_store_child(urls: list[str], start, results) -> None:
    for url in urls:
        start.wait(60)
        try:
            store = InventoryStore(url)
            results.put((url, "ok", current_revision(store.engine)))
            store.dispose()
        except Exception as err:  # reported to the parent
            results.put((url, "error", f"{type(err).__name__}: {err}"))


FIRST_USE_ROUNDS = 10


def test_first_use_from_several_processes_at_once_migrates_once(db_url, request, tmp_path):
    """Four processes open an empty database at the same instant, ten times over on fresh
    databases: all succeed every time, the schema is created once (one inventory row), and the
    database is at head. (On SQLite the switch to WAL mode once failed here at random.)"""
    if db_url.startswith("sqlite"):
        urls = [f"sqlite:///{tmp_path / f'first-use-{i}.sqlite'}" for i in range(FIRST_USE_ROUNDS)]
    else:
        pg = request.getfixturevalue("pg_database")
        urls = [pg_schema_url(pg) for _ in range(FIRST_USE_ROUNDS)]
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_store_child, args=(urls, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(4 * len(urls))]
    for p in procs:
        p.join(60)
    assert sorted(got) == sorted((url, "ok", head_revision()) for url in urls for _ in range(4))
    for url in urls:
        engine = create_inventory_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(t.inventory)).all() == [(1, 0)]
        engine.dispose()


def test_cli_db_upgrade_applies_migrations_and_is_idempotent(db_url, tmp_path):
    head = head_revision()
    shown = make_url(db_url).render_as_string(hide_password=True)
    current = _cli(db_url, "db", "current", cwd=tmp_path)
    assert current.returncode == 0, current.stderr
    assert "at revision None" in current.stdout
    first = _cli(db_url, "db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{shown}: at revision {head} (newest {head})"
    store = InventoryStore(db_url)
    _fill(store)
    before = (store.projects(), store.runs(), store.history())
    again = _cli(db_url, "db", "upgrade", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert (store.projects(), store.runs(), store.history()) == before
    assert current_revision(store.engine) == head
    store.dispose()


def test_downgrade_to_base_then_upgrade_to_head(db_url):
    store = InventoryStore(db_url)
    run_once(store, {SCOPE: ["a", "b"]})
    store.dispose()
    engine = create_inventory_engine(db_url)
    _alembic(engine, command.downgrade, "base")
    assert current_revision(engine) is None
    assert not _tables(engine) & TABLES
    _alembic(engine, command.upgrade, "head")
    assert current_revision(engine) == head_revision()
    assert _tables(engine) >= TABLES
    engine.dispose()
    store = InventoryStore(db_url)
    assert store.project_keys() == set()
    run_id, _ = run_once(store, {SCOPE: ["a"]})
    assert store.get_run(run_id).generation == 1
    store.dispose()


# --------------------------------------------------------------------------- upgrades keep data


def _copy_rows(source: Engine, target: Engine) -> None:
    """Copy every row of ``source`` into ``target``, restricted to the columns ``target`` has."""
    with source.connect() as src, target.begin() as dst:
        inspector = sa.inspect(dst)  # on this connection: SQLite lets one writer in at a time
        for table in t.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            have = {c["name"] for c in inspector.get_columns(table.name)}
            rows = [
                {k: v for k, v in row.items() if k in have}
                for row in src.execute(sa.select(table)).mappings()
            ]
            into = table
            if table.name == "staged_projects" and "content_hash" in have:
                # before 0006 staging held a digest (NOT NULL): any value will do there
                into = table.to_metadata(sa.MetaData())
                into.append_column(sa.Column("content_hash", sa.String(64)))
                rows = [{**row, "content_hash": "staged-before-0006"} for row in rows]
            dst.execute(sa.delete(table))  # the first migration seeds the inventory row
            if rows:
                dst.execute(sa.insert(into), rows)
        if dst.dialect.name == "postgresql":  # explicit ids were copied: move sequences on
            for table in t.metadata.sorted_tables:
                if not inspector.has_table(table.name):
                    continue
                for column in table.primary_key.columns:
                    if not isinstance(column.type, sa.Integer):
                        continue
                    sequence = dst.execute(
                        sa.select(sa.func.pg_get_serial_sequence(table.name, column.name))
                    ).scalar()
                    top = dst.execute(sa.select(sa.func.max(column))).scalar()
                    if sequence and top:
                        dst.execute(sa.select(sa.func.setval(sequence, top)))


def _as_rows(records) -> list[dict]:
    return [r.to_dict() for r in records]


def _snapshot(engine: Engine) -> dict[str, dict[tuple, dict]]:
    """Every row of every known table, by primary key, in the columns the database has."""
    snap: dict[str, dict[tuple, dict]] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in t.metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            have = {c["name"] for c in inspector.get_columns(table.name)}
            cols = [c for c in table.columns if c.name in have]
            pk = [c.name for c in table.primary_key.columns]
            rows = conn.execute(sa.select(*cols)).mappings()
            snap[table.name] = {tuple(r[c] for c in pk): dict(r) for r in rows}
    return snap


def test_each_migration_step_keeps_every_row(db_url, tmp_path):
    """A database holding projects, runs, scopes, staged rows, history and cleanups at the
    oldest revision is upgraded one revision at a time; after every step each row is still
    there with the values it had. At head the store reads it all and runs on from it."""
    revisions = _revisions()
    source = InventoryStore(f"sqlite:///{tmp_path / 'source.sqlite'}")
    roles = _fill(source)

    target = create_inventory_engine(db_url)
    upgrade_schema(target, revisions[0])
    assert current_revision(target) == revisions[0]
    _copy_rows(source.engine, target)
    original = _snapshot(target)
    for name in set(original) - {"inventory"}:  # the tables the oldest revision has
        assert original[name], f"no rows in {name}: the fixture data does not cover it"

    for revision in revisions[1:]:
        upgrade_schema(target, revision)
        assert current_revision(target) == revision
        now = _snapshot(target)
        for name, rows in original.items():
            assert name in now, f"{revision} dropped table {name}"
            for pk, row in rows.items():
                assert pk in now[name], f"{revision} lost {name} row {pk}"
                kept = {c: v for c, v in now[name][pk].items() if c in row}
                if revision >= "0006" and name == "projects":
                    kept.pop("content_hash")  # recomputed by 0006 (checked below)
                assert kept == {c: row[c] for c in kept}, f"{revision} changed {name} row {pk}"
    target.dispose()

    store = InventoryStore(db_url)  # at head now: nothing left to apply
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:  # 0006's digest is the one the flush computes
        digest = store._ctx.dialect.digest(t.projects)
        wrong = conn.execute(
            sa.select(t.projects.c.project_key).where(t.projects.c.content_hash != digest)
        )
        assert wrong.all() == []

    # columns added after the oldest revision start empty; every other value is kept
    def kept(rows: list[dict], table: str) -> list[dict]:
        old = set(next(iter(original[table].values())))
        return [{k: v for k, v in r.items() if k in old} for r in rows]

    def undigested(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "content_hash"} for r in rows]

    assert undigested(kept(store.projects(), "projects")) == undigested(
        kept(source.projects(), "projects")
    )
    assert kept(_as_rows(store.history()), "removed_projects") == kept(
        _as_rows(source.history()), "removed_projects"
    )
    fresh = {"policy": None, "configured_scopes": None, "scopes": None}
    assert store.runs() == [replace(r, **fresh) for r in source.runs()]
    assert store.get_run(roles["failed"]).status == "failed"
    run_id, result = run_once(store, {SCOPE: ["a"], OTHER: ["x", "y"]}, policy=_lenient())
    assert store.get_run(run_id).generation == source.get_run(roles["failed"]).generation + 1
    assert result.removed_keys == [key("b"), key("c"), key("d")]
    assert sorted(store.restore(run_id)) == result.removed_keys
    source.dispose()
    store.dispose()


def _lenient() -> CleanupPolicy:
    return CleanupPolicy(max_delete_fraction=None, max_delete_count=None)


# --------------------------------------------------------------------------- schema agreement


def test_migrated_schema_matches_schema_py(db_url):
    """Alembic autogenerate finds nothing to change between the migrated database and
    ``schema.metadata``; plus what autogenerate does not compare: the named CHECK constraints,
    and that the one-active-run index is gone (0008: one writer per scope)."""
    store = InventoryStore(db_url)
    opts = {"compare_type": True, "compare_server_default": True}
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), t.metadata)
        assert diffs == []
        # The comparison is not blind: a column only the metadata has is reported.
        changed = sa.MetaData()
        for table in t.metadata.sorted_tables:
            table.to_metadata(changed)
        changed.tables["projects"].append_column(sa.Column("not_migrated", sa.Text))
        extra = compare_metadata(MigrationContext.configure(conn, opts=opts), changed)
        assert [d[0] for d in extra] == ["add_column"]

    inspector = sa.inspect(store.engine)
    assert "uq_run_state_one_active" not in {i["name"] for i in inspector.get_indexes("run_state")}
    for table, name in (("run_state", "ck_run_state_status"), ("cleanups", "ck_cleanups_status")):
        assert name in {c["name"] for c in inspector.get_check_constraints(table)}
    store.dispose()


#: ``run_scopes`` as revisions before 0004 have it (``fingerprint``, not yet ``identity``).
OLD_RUN_SCOPES = sa.table(
    "run_scopes",
    *(sa.column(c) for c in ("run_id", "scope_key", "source_kind", "complete")),
    sa.column("ended_at", t.UTCDateTime()),
    sa.column("fingerprint", t.JSONType),
)


def test_0004_settles_the_trust_of_existing_readings(db_url):
    """Upgrading to 0004 walks each scope's past readings in generation order: a completed,
    complete reading is trusted when its device matches the last trusted one; a changed device,
    an incomplete read and a failed run are not, and the change stays held until it returns."""
    engine = create_inventory_engine(db_url)
    upgrade_schema(engine, "0003")
    now = datetime.now(UTC)
    readings = [  # (generation, status, complete, st_dev)
        (1, "completed", True, 1),
        (2, "completed", True, 2),  # another filesystem mounted at the root
        (3, "failed", True, 1),
        (4, "completed", False, 1),
        (5, "completed", True, 2),  # still the other filesystem: compared with run 1, held
        (6, "completed", True, 1),  # the old one is back
    ]
    with engine.begin() as conn:
        for gen, status, complete, dev in readings:
            conn.execute(
                sa.insert(t.run_state).values(
                    run_id=f"r{gen}",
                    generation=gen,
                    status=status,
                    flush_succeeded=status == "completed",
                    started_at=now,
                    heartbeat_at=now,
                )
            )
            conn.execute(
                sa.insert(OLD_RUN_SCOPES).values(
                    run_id=f"r{gen}",
                    scope_key=SCOPE,
                    source_kind="filesystem",
                    complete=complete,
                    fingerprint={"st_dev": dev},
                    ended_at=now,
                )
            )
    upgrade_schema(engine, "0004")
    with engine.connect() as conn:
        got = {
            r.run_id: (r.trusted, r.identity_note or "")
            for r in conn.execute(sa.text("SELECT run_id, trusted, identity_note FROM run_scopes"))
        }
    assert {r: bool(v[0]) for r, v in got.items()} == {
        "r1": True,
        "r2": False,
        "r3": False,
        "r4": False,
        "r5": False,
        "r6": True,
    }
    assert "st_dev was 1 in run r1, now 2" in got["r2"][1]
    assert "st_dev was 1 in run r1, now 2" in got["r5"][1]
    assert got["r3"][1] == "run failed" and got["r4"][1] == "scope read incompletely"
    engine.dispose()


# --------------------------------------------------------------------------- 0003 moves values


def _old_row(key_: str, kind: str, attributes: dict, **values) -> dict:
    return {
        "project_key": key_,
        "scope_key": f"{kind}:scope",
        "source_kind": kind,
        "name": key_,
        "location": key_,
        "vcs": "git",
        "markers": [],
        "attributes": attributes,
        "content_hash": "h",
        "default_branch": "main",
        "last_commit_at": None,
        **values,
    }


def test_0003_moves_attribute_values_into_columns(db_url):
    """A 0002 database holding GitHub, GitLab, Gitea and checkout rows (in projects and in
    staging) is upgraded: the values move out of ``attributes`` into their columns, a
    checkout's branch becomes ``current_branch``, and the store runs on from it."""
    engine = create_inventory_engine(db_url)
    upgrade_schema(engine, "0002")
    when = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    rows = [
        _old_row(
            "github:h:1",
            "github",
            {
                "id": 1,
                "archived": True,
                "fork": False,
                "visibility": "private",
                "topics": ["a", "b"],
                "language": "Python",
                "description": "d",
                "pushed_at": "2025-01-02T03:04:05Z",
                "updated_at": "2025-01-01T00:00:00Z",
            },
        ),
        _old_row(
            "gitlab:h:2",
            "gitlab",
            {
                "id": 2,
                "archived": False,
                "fork": True,
                "visibility": "internal",
                "topics": [],
                "star_count": 4,
                "created_at": "2024-02-03T04:05:06.789Z",
                "last_activity_at": "2025-02-03T04:05:06Z",
                "description": None,
                "forks_count": 1,
            },
        ),
        _old_row(
            "gitea:h:3",
            "gitea",
            {
                "id": 3,
                "archived": False,
                "fork": False,
                "visibility": "public",
                "language": "Go",
                "stars_count": 2,
                "created_at": "2024-01-01T00:00:00+01:00",
                "updated_at": "2024-01-02T00:00:00+01:00",
                "description": "",
                "mirror": False,
            },
        ),
        _old_row(
            "fs:/src/app",
            "filesystem",
            {"bare": False},
            default_branch="feature",
            last_commit_at=when,
        ),
        _old_row("fs:/src/b.git", "filesystem", {"bare": True}, default_branch="trunk"),
    ]
    old_cols = [
        "project_key", "scope_key", "source_kind", "name", "location", "vcs", "markers",
        "attributes", "content_hash", "default_branch", "last_commit_at",
    ]  # fmt: skip
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for table, extra in (
            (t.projects, {"run_id": "r1", "first_seen_at": stamp, "last_seen_at": stamp,
                          "changed_at": stamp}),
            (t.staged_projects, {"run_id": "r1"}),
        ):  # fmt: skip
            types = {**{c.name: c.type for c in table.columns}, "content_hash": sa.String(64)}
            old = sa.table(table.name, *[sa.column(c, types[c]) for c in old_cols + list(extra)])
            conn.execute(sa.insert(old), [{**{c: r[c] for c in old_cols}, **extra} for r in rows])
    upgrade_schema(engine, "0003")
    for table in (t.projects, t.staged_projects):
        with engine.connect() as conn:  # the columns 0003 has (later revisions add more)
            have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
            cols = [c for c in table.columns if c.name in have]
            got = {r.project_key: r for r in conn.execute(sa.select(*cols)).mappings()}
        gh, gl, ge = got["github:h:1"], got["gitlab:h:2"], got["gitea:h:3"]
        assert (gh.archived, gh.fork, gh.visibility, gh.language) == (
            True,
            False,
            "private",
            "Python",
        )
        assert gh.topics == ["a", "b"] and gh.description == "d"
        assert gh.last_activity_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert gh.attributes == {
            "id": 1,
            "pushed_at": "2025-01-02T03:04:05Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }
        assert (gl.archived, gl.fork, gl.visibility, gl.stars) == (False, True, "internal", 4)
        assert gl.topics == [] and gl.description is None
        assert gl.created_at == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
        assert gl.last_activity_at == datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
        assert gl.attributes == {"id": 2, "forks_count": 1}
        assert (ge.stars, ge.language, ge.description) == (2, "Go", None)
        assert ge.created_at == datetime(2023, 12, 31, 23, tzinfo=UTC)
        assert ge.last_activity_at == datetime(2024, 1, 1, 23, tzinfo=UTC)
        assert ge.attributes == {
            "id": 3,
            "mirror": False,
            "updated_at": "2024-01-02T00:00:00+01:00",
        }
        app, bare = got["fs:/src/app"], got["fs:/src/b.git"]
        assert (app.current_branch, app.default_branch) == ("feature", None)
        assert app.last_activity_at == when
        assert (bare.current_branch, bare.default_branch) == (None, "trunk")
        for row in (app, bare):  # unknown until the next scan reads it
            assert row.remotes is None and row.in_sync is None and row.license is None
    engine.dispose()
    store = InventoryStore(db_url)
    run_once(store, {SCOPE: ["a"]})
    assert key("a") in store.project_keys() and "github:h:1" in store.project_keys()
    store.dispose()
