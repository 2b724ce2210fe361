"""Benchmark one store cycle against hand-written SQL doing the same work (issue #6).

For every size N and backend (SQLite file in a temp dir; PostgreSQL database created and dropped
here), two implementations run the same two-run cycle on fresh databases with the same tables
(the Alembic migrations):

* **ours** — ``InventoryStore``: run 1 stages N records in batches (the real ``stage()`` path),
  ends its scopes, flushes, verifies, completes and cleans up (nothing to remove); run 2 sees
  N minus 1% (and 5% of the rest changed), so its cleanup (lenient policy) moves 1% to history.
* **plain** — the same data work by hand: PostgreSQL COPY into ``staged_projects``,
  ``INSERT … SELECT … ON CONFLICT DO UPDATE`` that stamps and confirms (one write a row, as
  ours), a count to check it, ``INSERT INTO removed_projects SELECT …`` + ``DELETE``, the old
  staging deleted; SQLite the same with ``executemany`` for staging.
* **limit** — plain's statements over rows prepared before the clock starts: the database alone.

All three let the database compute ``content_hash`` in the flush's ``INSERT … SELECT`` (the
store's digest: MD5 of ``json_build_array`` on PostgreSQL, SHA-1 of ``json_array`` through the
``enum_digest`` function on SQLite); building the records themselves is not timed. Every
case runs in a child process, so its peak RSS (``ru_maxrss`` of that child, from
``os.wait4``) is its own. Medians of ``--repeat`` runs (``--large-repeat`` for N >=
1,000,000); ours and baseline alternate within a repeat::

    python bench/bench_store.py                       # 10k, 100k, 1M on sqlite + postgresql
    python bench/bench_store.py --sizes 10000 100000 --backends postgresql --repeat 5
    python bench/bench_store.py --quick               # 10k... smallest size, one repeat (CI)
    python bench/bench_store.py --history-rows 1000000 --history-size 100000   # + cleanup
        # with 1M rows already in removed_projects (ours only), beside the empty-history case

PostgreSQL: ``ENUM_PIPELINE_BENCH_PG_URL`` (else ``ENUM_PIPELINE_TEST_PG_URL``, else the local
server as user postgres). Unreachable PostgreSQL is an error (exit 1) unless ``--backends
sqlite``. ``--json PATH`` writes the results for ``bench/run``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PHASES = ("stage", "flush", "verify", "cleanup", "other")
REMOVED_EVERY = 100  # run 2 misses every 100th record: 1%
CHANGED_EVERY = 20  # run 2 sees every 20th record changed: 5%
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
DATA_COLUMNS = [
    "scope_key",
    "source_kind",
    "name",
    "location",
    "vcs",
    "path",
    "remote_url",
    "normalized_remote",
    "default_branch",
    "head_commit",
    "last_commit_at",
    "markers",
    "attributes",
    # the product columns (migration 0003) a checkout fills
    "last_activity_at",
    "current_branch",
    "remotes",
    "upstream",
    "in_sync",
    "shallow",
    "has_stash",
    "last_fetch_at",
]
STAGE_COLUMNS = ["run_id", "project_key", *DATA_COLUMNS]
PROJECT_COLUMNS = [
    "project_key",
    *DATA_COLUMNS,
    "content_hash",
    "run_id",
    "seen_generation",
    "last_confirmed_run_id",
    "confirmed_generation",
    "first_seen_at",
    "last_seen_at",
    "changed_at",
    "missing_since",
    "missed_runs",
]


def pg_admin_url() -> str:
    """The SQLAlchemy URL of the PostgreSQL maintenance database to create bench databases in."""
    return (
        os.environ.get("ENUM_PIPELINE_BENCH_PG_URL")
        or os.environ.get("ENUM_PIPELINE_TEST_PG_URL")
        or DEFAULT_PG
    )


def _libpq(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a libpq connection string."""
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


# ---------------------------------------------------------------------------- synthetic data


def make_record(i: int, n: int, scopes: int, run: int) -> ProjectRecord:
    """Record ``i`` of ``n`` as run ``run`` sees it (run 2 changes every ``CHANGED_EVERY``-th).

    Records come scope by scope (``scopes`` equal blocks), as a scan reads root after root.
    """
    root = f"/bench/root{i * scopes // n:02d}"
    name = f"project-{i:07d}"
    location = f"{root}/grp{i // 1000:04d}/{name}"
    org = f"org{i % 997}"
    head = hashlib.sha1(f"{i}:{run if i % CHANGED_EVERY == 1 else 1}".encode()).hexdigest()
    return ProjectRecord(
        project_key=f"fs:{location}",
        scope_key=f"fs:{root}",
        source_kind="filesystem",
        name=name,
        location=location,
        vcs="git",
        path=location,
        remote_url=f"git@github.com:{org}/{name}.git",
        normalized_remote=f"github.com/{org}/{name}",
        default_branch="main",
        head_commit=head,
        last_commit_at=BASE_TIME + timedelta(seconds=i * 37),
        markers=("pyproject.toml", "Makefile") if i % 3 else ("package.json",),
        attributes={"bare": False, "dirty": i % 7 == 0, "submodules": i % 11},
        last_activity_at=BASE_TIME + timedelta(seconds=i * 37),
        current_branch="main",
        remotes={"origin": f"git@github.com:{org}/{name}.git"},
        upstream="origin/main",
        in_sync=i % 5 != 0,
        shallow=False,
        has_stash=i % 13 == 0,
        last_fetch_at=BASE_TIME + timedelta(seconds=i * 11),
    )


def batches(n: int, scopes: int, run: int, size: int) -> Iterator[list[ProjectRecord]]:
    """The records run ``run`` sees, ``size`` at a time (never all of them at once)."""
    batch: list[ProjectRecord] = []
    for i in range(n):
        if run == 2 and i % REMOVED_EVERY == 0:
            continue
        batch.append(make_record(i, n, scopes, run))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def expected_counts(n: int) -> tuple[int, int]:
    """(projects left after run 2, rows run 2's cleanup removes)."""
    removed = len(range(0, n, REMOVED_EVERY))
    return n - removed, removed


def scope_keys(scopes: int) -> list[str]:
    return [f"fs:/bench/root{s:02d}" for s in range(scopes)]


def prefill_history(url: str, rows: int) -> None:
    """Put ``rows`` old removals into ``removed_projects`` (untimed), as years of cleanups would."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "INSERT INTO removed_projects (project_key, scope_key, removed_by_run_id, "
                "removed_at, row) SELECT 'fs:/old/p' || g, "
                "'fs:/bench/root' || lpad(mod(g, 10)::text, 2, '0'), "
                "'old-run-' || (g / 5000), now() - interval '1 day' * (g / 5000), "
                "jsonb_build_object('project_key', 'fs:/old/p' || g, 'name', 'p' || g, "
                "'location', '/old/p' || g, 'path', '/old/p' || g, 'vcs', 'git', "
                "'remote_url', 'git@github.com:org/p' || g || '.git', 'head_commit', "
                "md5(g::text) || md5(g::text), 'markers', jsonb_build_array('Makefile'), "
                "'attributes', jsonb_build_object('bare', false), 'seen_generation', g / 5000) "
                f"FROM generate_series(1, {int(rows)}) AS g"
            )
        else:
            conn.exec_driver_sql(
                "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c "
                f"WHERE g < {int(rows)}) "
                "INSERT INTO removed_projects (project_key, scope_key, removed_by_run_id, "
                "removed_at, row) SELECT 'fs:/old/p' || g, 'fs:/bench/root' || "
                "printf('%02d', g % 10), 'old-run-' || (g / 5000), "
                "datetime('now', '-' || (g / 5000) || ' days'), json_object('project_key', "
                "'fs:/old/p' || g, 'name', 'p' || g, 'location', '/old/p' || g, 'path', "
                "'/old/p' || g, 'vcs', 'git', 'remote_url', 'git@github.com:org/p' || g || "
                "'.git', 'head_commit', hex(randomblob(20)), 'markers', json_array('Makefile'), "
                "'attributes', json_object('bare', json('false')), 'seen_generation', g / 5000) "
                "FROM c"
            )
    engine.dispose()


# ---------------------------------------------------------------------------- ours


def plan_of(spec: dict) -> list[int]:
    """The runs of one case, by the variant of the data each sees (see ``make_record``).

    ``cycle``: a first run, then a run that misses 1% and sees 5% changed. ``growth``: a first
    run, then ``unchanged`` runs that see exactly the same records.
    """
    if spec.get("mode") == "growth":
        return [1] * (1 + spec["unchanged"])
    return [1, 2]


def _variant_batches(spec: dict, variant: int, size: int) -> Iterator[list[ProjectRecord]]:
    n, scopes = spec["size"], spec["scopes"]
    if spec.get("mode") == "growth":
        return batches(n, scopes, 1, size)
    return batches(n, scopes, variant, size)


def table_sizes(url: str) -> dict[str, int]:
    """Bytes of ``projects`` on disk (heap + TOAST) and of its indexes (PostgreSQL; else {})."""
    import sqlalchemy as sa

    if sa.engine.make_url(url).get_backend_name() != "postgresql":
        return {}
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        heap, index = conn.execute(
            "SELECT pg_table_size('projects'), pg_indexes_size('projects')"
        ).fetchone()
    return {"heap": int(heap), "index": int(index)}


def vacuum_if_asked(spec: dict) -> None:
    """``VACUUM projects`` after a run when the case asks for it (untimed: autovacuum's work)."""
    if spec.get("vacuum") != "each":
        return
    import psycopg

    with psycopg.connect(_libpq(spec["url"]), autocommit=True) as conn:
        conn.execute("VACUUM projects")


def _check_counts(spec: dict, left: int, removed: int | None) -> None:
    if spec.get("mode") == "growth":
        assert left == spec["size"], (left, spec["size"])
        return
    want_left, want_removed = expected_counts(spec["size"])
    assert left == want_left, (left, want_left)
    assert removed == want_removed, (removed, want_removed)


class ConfirmAll:
    """A witness that confirms every candidate gone without looking: the cleanup as it was
    before absences were confirmed (``bench_confirm.py`` measures the looks themselves)."""

    def confirm(self, candidates):
        from enum_pipeline.sources.witness import Absence, Confirmation, now

        at = now()
        return (Confirmation(c.project_key, Absence.GONE, "bench", at) for c in candidates)


CONFIRM_ALL = ConfirmAll()


class _BenchSource:
    """A run's records as a source for ``steps.start_run``; the time spent building the records
    (not timed by this benchmark) is kept in ``build_seconds``."""

    kind = "filesystem"

    def __init__(self, spec: dict, variant: int, batch_size: int):
        self.spec, self.variant, self.batch_size = spec, variant, batch_size
        self.build_seconds = 0.0

    def scope_keys(self) -> list[str]:
        return scope_keys(self.spec["scopes"])

    def scan(self) -> Iterator[ProjectRecord | ScopeVerdict]:
        seen = dict.fromkeys(self.scope_keys(), 0)
        records = _variant_batches(self.spec, self.variant, self.batch_size)
        while True:
            t = time.perf_counter()
            batch = next(records, None)
            self.build_seconds += time.perf_counter() - t
            if batch is None:
                break
            for r in batch:
                seen[r.scope_key] += 1
            yield from batch
        for scope, count in seen.items():
            yield ScopeVerdict(scope, "filesystem", True, count)


def cycle_ours(spec: dict) -> dict:
    """The runs of ``plan_of(spec)`` through the step layer (``enum_pipeline.steps``); per-run
    phase times in seconds ("stage" includes ``begin``)."""
    from enum_pipeline import steps
    from enum_pipeline.store import CleanupPolicy, InventoryStore

    batch_size = spec["batch"]
    store = InventoryStore(spec["url"])
    if spec.get("history_rows"):
        prefill_history(spec["url"], spec["history_rows"])
    policy = CleanupPolicy(max_delete_count=None, max_delete_fraction=None, confirm_budget=10**9)
    runs, sizes = [], []
    for number, variant in enumerate(plan_of(spec), 1):
        run_id = f"bench-{number}-{uuid.uuid4().hex[:8]}"
        times = dict.fromkeys(PHASES, 0.0)
        source = _BenchSource(spec, variant, batch_size)
        t = time.perf_counter()
        steps.start_run(store, run_id, [source], batch_size=batch_size, policy=policy)
        times["stage"] += time.perf_counter() - t - source.build_seconds
        t = time.perf_counter()
        steps.flush_run(store, run_id)
        times["flush"] += time.perf_counter() - t
        t = time.perf_counter()
        assert steps.verify_run(store, run_id).flush_succeeded
        times["verify"] += time.perf_counter() - t
        t = time.perf_counter()
        status = steps.finish_run(store, run_id).status
        times["other"] += time.perf_counter() - t
        assert status == "completed", status
        t = time.perf_counter()
        result = store.safe_cleanup_old_projects(run_id, policy, witness=CONFIRM_ALL)
        times["cleanup"] += time.perf_counter() - t
        assert result.status in ("done", "noop"), (result.status, result.reason)
        runs.append(times)
        vacuum_if_asked(spec)
        sizes.append(table_sizes(spec["url"]))
    _check_counts(spec, store.count_projects(), result.removed)
    store.dispose()
    return {"runs": runs, "sizes": sizes}


# ---------------------------------------------------------------------------- baselines
#
# *plain*: the same data work written by hand, Python included (hash, rows, driver adaptation).
# *limit*: the same statements over rows prepared before the clock starts (hash computed, JSON
# encoded, COPY text rendered / parameter tuples built): what the database alone needs.

_UPSERT_SET = [f"{c} = EXCLUDED.{c}" for c in [*DATA_COLUMNS, "content_hash"]] + [
    "run_id = EXCLUDED.run_id",
    "seen_generation = EXCLUDED.seen_generation",
    "last_confirmed_run_id = EXCLUDED.last_confirmed_run_id",
    "confirmed_generation = EXCLUDED.confirmed_generation",
    "last_seen_at = EXCLUDED.last_seen_at",
    "changed_at = CASE WHEN projects.content_hash <> EXCLUDED.content_hash "
    "THEN EXCLUDED.changed_at ELSE projects.changed_at END",
    "missing_since = NULL",
    "missed_runs = 0",
]
_INSERT_COLS = [
    "project_key",
    *DATA_COLUMNS,
    "content_hash",
    "run_id",
    "seen_generation",
    "last_confirmed_run_id",
    "confirmed_generation",
    "first_seen_at",
    "last_seen_at",
    "changed_at",
    "missed_runs",
]


def _same(value):
    return value


def _sqlite_time(value: datetime | None) -> str | None:
    """A UTC timestamp as the store writes it to SQLite."""
    return value.replace(tzinfo=None).isoformat(sep=" ") if value else None


def stage_row(run_id: str, r: ProjectRecord, time_value, json_value) -> tuple:
    """One ``staged_projects`` row in ``STAGE_COLUMNS`` order; the driver's conversions of the
    timestamp and the JSON columns are passed in."""
    return (
        run_id,
        r.project_key,
        r.scope_key,
        r.source_kind,
        r.name,
        r.location,
        r.vcs,
        r.path,
        r.remote_url,
        r.normalized_remote,
        r.default_branch,
        r.head_commit,
        time_value(r.last_commit_at),
        json_value(sorted(r.markers)),
        json_value(r.attributes or {}),
        time_value(r.last_activity_at),
        r.current_branch,
        json_value(r.remotes) if r.remotes is not None else None,
        r.upstream,
        r.in_sync,
        r.shallow,
        r.has_stash,
        time_value(r.last_fetch_at),
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(rows: list[tuple]) -> bytes:
    """Rows rendered in COPY's text format (what the driver sends), ready to write as is."""
    out = []
    for row in rows:
        out.append(
            "\t".join(
                "\\N"
                if v is None
                else (v if isinstance(v, str) else str(v)).translate(_COPY_ESCAPES)
                for v in row
            )
        )
    out.append("")
    return "\n".join(out).encode("utf-8", "surrogateescape")


def _digest_sql(backend: str) -> str:
    """The store's digest of a staged row, written out (every hashed column, as the store)."""
    from enum_pipeline.store import schema as t

    times = {c.name for c in t.staged_projects.columns if isinstance(c.type, t.UTCDateTime)}
    if backend == "postgresql":
        cols = ", ".join(f"timezone('UTC', {c})" if c in times else c for c in t.HASHED_COLUMNS)
        return f"md5(CAST(json_build_array({cols}) AS TEXT))"
    return f"enum_digest(json_array({', '.join(t.HASHED_COLUMNS)}))"


def _upsert_sql(param, backend: str) -> str:
    """The set-based flush, written out by hand (``param(name)`` renders a placeholder)."""
    return (
        f"INSERT INTO projects ({', '.join(_INSERT_COLS)}) "
        f"SELECT project_key, {', '.join(DATA_COLUMNS)}, {_digest_sql(backend)}, "
        f"{param('run')}, {param('gen')}, "
        f"{param('run')}, {param('gen')}, "
        f"{param('now')}, {param('now')}, {param('now')}, 0 "
        f"FROM staged_projects WHERE run_id = {param('run')} "
        f"ON CONFLICT (project_key) DO UPDATE SET {', '.join(_UPSERT_SET)} "
        "WHERE projects.seen_generation IS NULL "
        "OR projects.seen_generation <= EXCLUDED.seen_generation"
    )


def cycle_baseline(spec: dict) -> dict:
    """The same runs in plain SQL (``impl`` plain or limit) on a database with the same tables."""
    import sqlalchemy as sa

    from enum_pipeline.store.engine import create_inventory_engine, ensure_schema

    engine = create_inventory_engine(spec["url"])
    ensure_schema(engine)  # the same table definitions, untimed
    engine.dispose()
    if spec.get("history_rows"):
        prefill_history(spec["url"], spec["history_rows"])
    if sa.engine.make_url(spec["url"]).get_backend_name() == "postgresql":
        return _baseline_pg(spec)
    return _baseline_sqlite(spec)


def _baseline_pg(spec: dict) -> dict:
    import psycopg
    from psycopg.types.json import Jsonb

    scopes, batch_size = spec["scopes"], spec["batch"]
    prepared = spec["impl"] == "limit"
    conn = psycopg.connect(_libpq(spec["url"]))
    cur = conn.cursor()
    pg_types = {"run": "varchar", "gen": "bigint", "now": "timestamptz"}
    upsert = _upsert_sql(lambda name: f"%({name})s::{pg_types[name]}", "postgresql")
    from enum_pipeline.store.schema import staging_partition

    runs, sizes = [], []
    for gen, variant in enumerate(plan_of(spec), 1):
        run_id, now = f"base-{gen}", datetime.now(UTC)
        times = dict.fromkeys(PHASES, 0.0)
        t = time.perf_counter()
        partition = staging_partition(run_id)  # the store's layout: a partition a run
        cur.execute(
            f"CREATE TABLE \"{partition}\" PARTITION OF staged_projects FOR VALUES IN ('{run_id}')"
        )
        times["other"] += time.perf_counter() - t
        copy_sql = f'COPY "{partition}" ({", ".join(STAGE_COLUMNS)}) FROM STDIN'
        for batch in _variant_batches(spec, variant, batch_size):
            if prepared:
                rows = [stage_row(run_id, r, _iso, json.dumps) for r in batch]
                payload = copy_text(rows)
                t = time.perf_counter()
                with cur.copy(copy_sql) as cp:
                    cp.write(payload)
            else:
                t = time.perf_counter()
                with cur.copy(copy_sql) as cp:
                    for r in batch:
                        cp.write_row(stage_row(run_id, r, _same, Jsonb))
            conn.commit()
            times["stage"] += time.perf_counter() - t
        t = time.perf_counter()
        cur.execute(upsert, {"run": run_id, "gen": gen, "now": now})
        conn.commit()
        times["flush"] += time.perf_counter() - t
        t = time.perf_counter()
        cur.execute("SELECT count(*) FROM projects WHERE seen_generation = %s", (gen,))
        cur.fetchone()
        conn.commit()
        times["verify"] += time.perf_counter() - t
        t = time.perf_counter()
        stale = "scope_key = ANY(%(scopes)s) AND seen_generation < %(gen)s"
        params = {"scopes": scope_keys(scopes), "gen": gen, "run": run_id, "now": now}
        cur.execute(
            "INSERT INTO removed_projects (project_key, scope_key, removed_by_run_id, "
            "removed_at, row) SELECT project_key, scope_key, %(run)s, %(now)s, to_jsonb(p) "
            f"FROM projects p WHERE {stale}",
            params,
        )
        cur.execute(f"DELETE FROM projects WHERE {stale}", params)
        removed = cur.rowcount
        conn.commit()
        times["cleanup"] += time.perf_counter() - t
        t = time.perf_counter()
        cur.execute(f'DROP TABLE IF EXISTS "{staging_partition(f"base-{gen - 2}")}"')
        conn.commit()
        times["other"] += time.perf_counter() - t
        runs.append(times)
        vacuum_if_asked(spec)
        sizes.append(table_sizes(spec["url"]))
    _check_counts(spec, cur.execute("SELECT count(*) FROM projects").fetchone()[0], removed)
    conn.close()
    return {"runs": runs, "sizes": sizes}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _baseline_sqlite(spec: dict) -> dict:
    import sqlite3

    from enum_pipeline.store.engine import sqlite_digest

    scopes, batch_size = spec["scopes"], spec["batch"]
    prepared = spec["impl"] == "limit"
    path = spec["url"].split("sqlite:///", 1)[1]
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
        conn.execute(f"PRAGMA {pragma}")
    insert = (
        f"INSERT INTO staged_projects ({', '.join(STAGE_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(STAGE_COLUMNS))})"
    )
    conn.create_function("enum_digest", 1, sqlite_digest, deterministic=True)
    upsert = _upsert_sql(lambda name: f":{name}", "sqlite")
    as_json = {"markers", "attributes"}
    row_json = ", ".join(
        f"'{c}', " + (f"json({c})" if c in as_json else c) for c in PROJECT_COLUMNS
    )
    runs = []
    for gen, variant in enumerate(plan_of(spec), 1):
        run_id = f"base-{gen}"
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        times = dict.fromkeys(PHASES, 0.0)
        for batch in _variant_batches(spec, variant, batch_size):
            if prepared:
                rows = [stage_row(run_id, r, _sqlite_time, json.dumps) for r in batch]
                t = time.perf_counter()
            else:
                t = time.perf_counter()
                rows = [stage_row(run_id, r, _sqlite_time, json.dumps) for r in batch]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
            times["stage"] += time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(upsert, {"run": run_id, "gen": gen, "now": now})
        conn.execute("COMMIT")
        times["flush"] += time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("SELECT count(*) FROM projects WHERE seen_generation = ?", (gen,)).fetchone()
        times["verify"] += time.perf_counter() - t
        t = time.perf_counter()
        keys = scope_keys(scopes)
        stale = f"scope_key IN ({', '.join('?' * len(keys))}) AND seen_generation < ?"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO removed_projects (project_key, scope_key, removed_by_run_id, "
            f"removed_at, row) SELECT project_key, scope_key, ?, ?, json_object({row_json}) "
            f"FROM projects WHERE {stale}",
            (run_id, now, *keys, gen),
        )
        removed = conn.execute(f"DELETE FROM projects WHERE {stale}", (*keys, gen)).rowcount
        conn.execute("COMMIT")
        times["cleanup"] += time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM staged_projects WHERE run_id = ?", (f"base-{gen - 2}",))
        conn.execute("COMMIT")
        times["other"] += time.perf_counter() - t
        runs.append(times)
    _check_counts(spec, conn.execute("SELECT count(*) FROM projects").fetchone()[0], removed)
    conn.close()
    return {"runs": runs, "sizes": [{} for _ in runs]}


def child_main(spec: dict) -> int:
    """Run one case in this (child) process and print its result as one JSON line."""
    t = time.perf_counter()
    out = cycle_ours(spec) if spec["impl"] == "ours" else cycle_baseline(spec)
    out["wall"] = time.perf_counter() - t
    out["self_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------- parent


class Databases:
    """Fresh databases per case: a SQLite file in a temp dir, or a new PostgreSQL database."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self._admin = None

    def pg_check(self) -> str | None:
        """None when PostgreSQL answers, else why not."""
        try:
            import psycopg

            self._admin = psycopg.connect(
                _libpq(pg_admin_url()), autocommit=True, connect_timeout=5
            )
        except Exception as err:  # noqa: BLE001 - any failure means unreachable
            return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None

    def create(self, backend: str, label: str) -> str:
        name = f"enum_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        if backend == "sqlite":
            os.makedirs(os.path.join(self.workdir, name))
            return f"sqlite:///{os.path.join(self.workdir, name, 'inventory.sqlite')}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        from sqlalchemy.engine import make_url

        return make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            shutil.rmtree(os.path.dirname(u.database), ignore_errors=True)
        else:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


def run_child(spec: dict, timeout: float) -> dict:
    """One case of this script in a child process (see ``common.run_child``)."""
    return common.run_child(__file__, spec, timeout)


IMPLS = ("ours", "plain", "limit")


def _totals(result: dict) -> dict[str, float]:
    """Phase times summed over the case's runs, plus the total."""
    sums = {p: sum(r[p] for r in result["runs"]) for p in PHASES}
    sums["total"] = sum(sums.values())
    return sums


def _run_total(run: dict) -> float:
    return sum(run[p] for p in PHASES)


def summarize(cases: list[dict]) -> dict:
    """Medians of the repeats of one (size, backend, impl)."""
    phases = [*PHASES, "total"]
    med = {p: statistics.median(_totals(c)[p] for c in cases) for p in phases}
    n_runs = len(cases[0]["runs"])
    per_run = [
        {p: statistics.median(c["runs"][i][p] for c in cases) for p in PHASES}
        for i in range(n_runs)
    ]
    return {
        "median": med,
        "runs": per_run,
        "repeats": len(cases),
        "maxrss_mib": max(c["maxrss_mib"] for c in cases),
        "samples_total": [_totals(c)["total"] for c in cases],
        "sizes": cases[-1].get("sizes") or [],
        "run_totals": [[_run_total(r) for r in c["runs"]] for c in cases],
    }


def paired(cases: dict[str, list[dict]], a: str, b: str, parts=("total",)) -> dict:
    """Ratio ``a``/``b`` of each repeat (the two ran back to back), its median and range."""
    ratios = []
    for ca, cb in zip(cases[a], cases[b], strict=True):
        ta, tb = _totals(ca), _totals(cb)
        num, den = sum(ta[p] for p in parts), sum(tb[p] for p in parts)
        if den > 0:
            ratios.append(num / den)
    if not ratios:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "n": len(ratios),
    }


ROW_PHASES = [
    ("stage", ("stage",)),
    ("flush", ("flush",)),
    ("verify", ("verify",)),
    ("cleanup", ("cleanup",)),
    ("begin+complete+prune", ("other",)),
    ("flush+verify+cleanup", ("flush", "verify", "cleanup")),
    ("total", ("total",)),
]


def table_rows(results: list[dict]) -> list[dict]:
    """One row per (size, backend, phase): ours, plain, limit, paired ratios, peak RSS."""
    rows = []
    for res in results:
        if res["kind"] != "cycle":
            continue
        for label, parts in ROW_PHASES:
            row = {"size": res["size"], "backend": res["backend"], "phase": label}
            for impl in IMPLS:
                row[impl] = sum(res[impl]["median"][p] for p in parts)
                row[f"rss_{impl}"] = res[impl]["maxrss_mib"]
            row["repeats"] = res["ours"]["repeats"]
            row["vs_limit"] = res["pairs"][label]["limit"]
            row["vs_plain"] = res["pairs"][label]["plain"]
            # kept for older readers of the JSON
            row["baseline"], row["ratio"] = row["plain"], row["vs_plain"]["median"]
            rows.append(row)
    return rows


def _rng(r: dict) -> str:
    if r["median"] is None:
        return "-"
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def print_tables(results: list[dict]) -> None:
    print(
        f"{'size':>9} {'backend':<10} {'phase':<21} {'ours s':>9} {'plain s':>9} "
        f"{'limit s':>9} {'ours/limit':>18} {'ours/plain':>18} {'RSS ours':>9} {'n':>2}"
    )
    for r in table_rows(results):
        rss = f"{r['rss_ours']:>8.0f}M" if r["phase"] == "total" else f"{'':>9}"
        print(
            f"{r['size']:>9} {r['backend']:<10} {r['phase']:<21} {r['ours']:>9.3f} "
            f"{r['plain']:>9.3f} {r['limit']:>9.3f} {_rng(r['vs_limit']):>18} "
            f"{_rng(r['vs_plain']):>18} {rss} {r['repeats']:>2}"
        )
    growth = [r for r in results if r["kind"] == "growth"]
    if growth:
        print()
        print(
            f"{'size':>9} {'backend':<10} {'impl':<6} {'vacuum':<7} {'run':>3} {'s':>8} "
            f"{'heap MiB':>9} {'index MiB':>9}"
        )
        for g in growth:
            for impl, data in g["impls"].items():
                for i, (sec, size) in enumerate(zip(data["runs"], data["sizes"], strict=True)):
                    print(
                        f"{g['size']:>9} {g['backend']:<10} {impl:<6} {g['vacuum']:<7} "
                        f"{i + 1:>3} {sec:>8.3f} {size.get('heap', 0) / 2**20:>9.1f} "
                        f"{size.get('index', 0) / 2**20:>9.1f}"
                    )
    hist = [r for r in results if r["kind"] == "history"]
    if hist:
        print()
        print(
            f"{'size':>9} {'backend':<10} {'history rows':>12} {'cleanup s (run 2)':>18} "
            f"{'empty history s':>16} {'ratio':>6}"
        )
        for h in hist:
            print(
                f"{h['size']:>9} {h['backend']:<10} {h['history_rows']:>12} "
                f"{h['cleanup_with_history']:>18.3f} {h['cleanup_empty']:>16.3f} "
                f"{h['cleanup_with_history'] / h['cleanup_empty']:>6.2f}"
            )


def run_cycle(dbs, base: dict, size: int, backend: str, n_rep: int, timeout: float) -> dict:
    """``n_rep`` repeats of ours, plain and limit, the order rotating each repeat."""
    cases: dict[str, list[dict]] = {impl: [] for impl in IMPLS}
    for rep in range(n_rep):
        order = IMPLS[rep % 3 :] + IMPLS[: rep % 3]
        for impl in order:
            url = dbs.create(backend, impl)
            try:
                spec = {**base, "impl": impl, "backend": backend, "size": size}
                cases[impl].append(run_child({**spec, "url": url}, timeout))
            finally:
                dbs.drop(url)
            print(
                f"# {backend} {size} {impl} #{rep + 1}: "
                f"{_totals(cases[impl][-1])['total']:.2f}s, "
                f"{cases[impl][-1]['maxrss_mib']:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    result = {"kind": "cycle", "size": size, "backend": backend}
    result.update({impl: summarize(cases[impl]) for impl in IMPLS})
    result["pairs"] = {
        label: {other: paired(cases, "ours", other, parts) for other in ("plain", "limit")}
        for label, parts in ROW_PHASES
    }
    return result


def run_growth(dbs, base: dict, size: int, unchanged: int, timeout: float) -> list[dict]:
    """PostgreSQL: a first run then ``unchanged`` identical runs, ``projects``' size after each;
    without any vacuum (the server runs with autovacuum off), and with ``VACUUM projects``
    after each run (what autovacuum, when it keeps up, does)."""
    out = []
    for vacuum in ("none", "each"):
        entry = {"kind": "growth", "size": size, "backend": "postgresql", "vacuum": vacuum}
        entry["impls"] = {}
        for impl in ("ours", "plain"):
            url = dbs.create("postgresql", f"grow_{impl}")
            try:
                spec = {
                    **base,
                    "impl": impl,
                    "backend": "postgresql",
                    "size": size,
                    "mode": "growth",
                    "unchanged": unchanged,
                    "vacuum": vacuum,
                }
                res = run_child({**spec, "url": url}, timeout)
            finally:
                dbs.drop(url)
            entry["impls"][impl] = {
                "runs": [_run_total(r) for r in res["runs"]],
                "sizes": res["sizes"],
                "maxrss_mib": res["maxrss_mib"],
            }
            first = res["sizes"][0]["heap"]
            print(
                f"# growth {impl} vacuum={vacuum}: heap {first / 2**20:.1f} -> "
                f"{res['sizes'][-1]['heap'] / 2**20:.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--large-repeat", type=int, default=1, help="repeats for N >= 1,000,000")
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        metavar="BACKEND:SIZE",
        help="cases to leave out, e.g. sqlite:1000000",
    )
    ap.add_argument("--batch", type=int, default=1000, help="records per stage() call")
    ap.add_argument("--scopes", type=int, default=10, help="root folders the records spread over")
    ap.add_argument(
        "--growth-size",
        type=int,
        default=0,
        help="PostgreSQL: also a first run + --unchanged identical runs of this size, "
        "measuring projects' size after each (with and without VACUUM between runs)",
    )
    ap.add_argument("--unchanged", type=int, default=5)
    ap.add_argument("--history-rows", type=int, default=0)
    ap.add_argument("--history-size", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="smallest size, one repeat")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))

    sizes = sorted(args.sizes)
    repeat, large_repeat = max(1, args.repeat), max(1, args.large_repeat)
    if args.quick:
        sizes, repeat, large_repeat = sizes[:1], 1, 1
    workdir = tempfile.mkdtemp(prefix="enum-bench-store-")
    dbs = Databases(workdir)
    if "postgresql" in args.backends:
        why = dbs.pg_check()
        if why:
            print(f"PostgreSQL unreachable at {pg_admin_url()}: {why}", file=sys.stderr)
            print("(run with --backends sqlite to benchmark SQLite only)", file=sys.stderr)
            return 1
    base = {"scopes": args.scopes, "batch": args.batch}
    results: list[dict] = []
    started = time.perf_counter()
    try:
        for size in sizes:
            n_rep = large_repeat if size >= 1_000_000 else repeat
            for backend in args.backends:
                if f"{backend}:{size}" in args.skip:
                    continue
                results.append(run_cycle(dbs, base, size, backend, n_rep, args.timeout))
        if args.growth_size and "postgresql" in args.backends:
            results += run_growth(
                dbs,
                base,
                args.growth_size if not args.quick else sizes[0],
                args.unchanged,
                args.timeout,
            )
        if args.history_rows and not args.quick:
            for backend in args.backends:
                empty = next(
                    (
                        r
                        for r in results
                        if r["kind"] == "cycle"
                        and r["backend"] == backend
                        and r["size"] == args.history_size
                    ),
                    None,
                )
                spec = {
                    **base,
                    "impl": "ours",
                    "backend": backend,
                    "size": args.history_size,
                    "history_rows": args.history_rows,
                }
                samples = []
                for _ in range(repeat):
                    url = dbs.create(backend, "hist")
                    try:
                        res = run_child({**spec, "url": url}, args.timeout)
                    finally:
                        dbs.drop(url)
                    samples.append(res)
                    print(
                        f"# {backend} {args.history_size} ours with {args.history_rows} history "
                        f"rows: cleanup {res['runs'][1]['cleanup']:.3f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                empty_cleanup = (
                    empty["ours"]["runs"][1]["cleanup"] if empty is not None else float("nan")
                )
                results.append(
                    {
                        "kind": "history",
                        "size": args.history_size,
                        "backend": backend,
                        "history_rows": args.history_rows,
                        "cleanup_with_history": statistics.median(
                            r["runs"][1]["cleanup"] for r in samples
                        ),
                        "cleanup_empty": empty_cleanup,
                        "maxrss_mib": max(r["maxrss_mib"] for r in samples),
                        "repeats": len(samples),
                    }
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_tables(results)
    elapsed = time.perf_counter() - started
    print(f"# bench_store: {elapsed:.0f}s wall", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "store",
                    "args": vars(args),
                    "results": results,
                    "rows": table_rows(results),
                    "seconds": elapsed,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
