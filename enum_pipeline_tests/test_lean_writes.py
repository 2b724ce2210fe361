"""Lean writes (issue 13), each on SQLite and PostgreSQL: staged rows hold the records' fields
and no digest; the flush computes ``content_hash`` in SQL, the same for the same record and
different when any field differs; the flush confirms in the transaction that writes; an
unchanged run keeps ``projects`` the size it was; pruned staging leaves nothing behind and the
two newest completed runs' staging stays readable."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.store import schema as t
from enum_pipeline.store.dialect import STAGE_COLUMNS, staging_partitions
from enum_pipeline.store.errors import CleanupRefusedError, FlushVerificationError
from enum_pipeline.store.staging import row_of
from enum_pipeline_tests.helpers import GONE, SCOPE, key, new_run_id, rec, run_once

WEIRD = [
    rec("plain"),
    rec("unicode-é-名前", default_branch="mäin", markers=("z.toml", "a.json")),
    rec("tabs\tand\nnewlines\\", attributes={"b": [1, 2.5, None], "a": {"y": True, "x": "\t"}}),
    rec("times", last_commit_at=datetime(2024, 5, 6, 7, 8, 9, 123, tzinfo=UTC)),
    rec("naive", last_commit_at=datetime(2024, 5, 6, 7, 8, 9), head_commit="ab" * 20),
    ProjectRecord(
        project_key="x:none",
        scope_key=SCOPE,
        source_kind="github",
        name="n",
        location="n",
        attributes={"when": datetime(2020, 1, 1, tzinfo=UTC), "tuple": (1, 2)},
    ),
]


def test_staged_row_holds_the_records_fields_and_no_digest():
    surrogates = rec("surrogate\udcff", remote_url="git@host:\udcfe.git")  # undecodable bytes
    assert "content_hash" not in STAGE_COLUMNS
    for record in [*WEIRD, surrogates]:
        row = dict(zip(STAGE_COLUMNS, row_of("r", record), strict=True))
        assert (row["run_id"], row["project_key"]) == ("r", record.project_key)
        assert row["name"] == record.name and row["remote_url"] == record.remote_url
        assert json.loads(row["markers"]) == sorted(record.markers)
        when = record.last_commit_at
        assert row["last_commit_at"] == (when and when.replace(tzinfo=when.tzinfo or UTC))
        assert row["last_commit_at"] is None or row["last_commit_at"].tzinfo is not None


def _reference_row(run_id, record, convert):
    """The staged row built field by field, the plain way ``row_of``'s generated code must
    match: every column from its field, JSON columns encoded with sorted keys, timestamps
    through ``convert``."""
    out = []
    for column in STAGE_COLUMNS:
        if column == "run_id":
            out.append(run_id)
            continue
        value = getattr(record, column)
        if column == "markers":
            value = json.dumps(sorted(value), sort_keys=True, default=str, ensure_ascii=False)
        elif column in ("attributes", "topics", "remotes"):
            default = {"attributes": "{}"}.get(column)
            value = (
                default
                if value is None
                else json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
            )
        elif isinstance(value, datetime):
            value = convert(value)
        out.append(value)
    return tuple(out)


def test_generated_row_equals_the_field_by_field_row_on_both_timestamp_forms():
    from enum_pipeline.store.dialect import sqlite_time

    when = datetime(2023, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    full = rec(
        "full",
        markers=["b.txt", "a.txt"],  # a list: not cached, still sorted
        topics=("x", "y"),
        remotes={"origin": "u", "fork": "v"},
        created_at=when,
        last_activity_at=datetime(2023, 3, 4, 5, 6, 7),
        last_fetch_at=when,
        stars=3,
        archived=True,
    )
    records = [*WEIRD, full, rec("repeat", markers=("z.toml", "a.json"))]
    for convert, form in ((None, lambda v: v.replace(tzinfo=v.tzinfo or UTC)), (sqlite_time,) * 2):
        for record in records:
            assert row_of("r", record, convert) == _reference_row("r", record, form), record.name


def _digests(store) -> dict[str, str]:
    return {r["project_key"]: r["content_hash"] for r in store.projects()}


def test_weird_records_round_trip_through_staging_and_flush(store):
    run_id, _ = run_once_records(store, WEIRD)
    rows = {r["project_key"]: r for r in store.projects()}
    for record in WEIRD:
        row = rows[record.project_key]
        assert row["name"] == record.name and row["remote_url"] == record.remote_url
        assert row["markers"] == sorted(record.markers)
        assert row["last_commit_at"] == (
            record.last_commit_at.replace(tzinfo=record.last_commit_at.tzinfo or UTC)
            if record.last_commit_at
            else None
        )
    staged = {r["project_key"]: r for r in store.staged_rows(run_id)}
    assert set(staged) == set(rows)
    assert staged[WEIRD[3].project_key]["attributes"] == WEIRD[3].attributes
    assert len(set(_digests(store).values())) == len(WEIRD)


def test_the_sql_digest_is_stable_and_sees_every_field(store):
    base = rec("d", last_commit_at=datetime(2024, 5, 6, 7, 8, 9, 123, tzinfo=UTC))
    run_once_records(store, [base])
    first = _digests(store)[base.project_key]
    if store.dialect == "postgresql":  # the session's time zone and date style do not matter
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'Asia/Kolkata'")
            conn.exec_driver_sql("SET LOCAL DateStyle = 'SQL, DMY'")
            again = conn.execute(
                sa.select(store._ctx.dialect.digest(t.projects)).where(
                    t.projects.c.project_key == base.project_key
                )
            ).scalar_one()
        assert again == first
    changes = {
        "name": "other",
        "markers": ("x.toml",),
        "attributes": {"dirty": True},
        "last_commit_at": datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC),
        "stars": 3,
        "in_sync": False,
        "topics": ("a",),
        "remotes": {"origin": "u"},
    }
    for field, value in changes.items():
        changed = dataclasses.replace(base, **{field: value})
        run_id, _ = run_once_records(store, [changed])
        assert store.get_run(run_id).changed_count == 1, field
        assert _digests(store)[base.project_key] != first, field
        run_id, _ = run_once_records(store, [base])
        assert _digests(store)[base.project_key] == first, field
    run_id, _ = run_once_records(store, [base])
    assert (store.get_run(run_id).changed_count, store.get_run(run_id).unchanged_count) == (0, 1)


def run_once_records(store, records):
    """One whole run that stages ``records`` as they are."""
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, records)
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, len(records)))
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    return run_id, None


def test_flush_confirms_what_it_wrote_and_verify_writes_no_project_row(store):
    run_once(store, {SCOPE: ["a", "b"]})
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a"), rec("c")])
    result = store.flush(run_id)
    assert (result.added, result.changed, result.unchanged) == (1, 0, 1)
    rows = {r["project_key"]: r for r in store.projects()}
    for k in (key("a"), key("c")):
        assert rows[k]["last_confirmed_run_id"] == run_id  # in the flush's own transaction
    assert rows[key("b")]["last_confirmed_run_id"] != run_id
    assert not store.get_run(run_id).flush_succeeded  # the run's proof is still to come
    before = store.projects()
    verified = store.verify_and_confirm(run_id)
    assert (verified.staged, verified.present, verified.flush_succeeded) == (2, 2, True)
    assert store.projects() == before
    assert store.get_run(run_id).confirmed_count == 2


def test_a_fenced_row_leaves_the_flush_unconfirmed(store):
    run_once(store, {SCOPE: ["a", "b"]})
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(t.projects)
            .where(t.projects.c.project_key == key("b"))
            .values(seen_generation=1000, run_id="future")
        )
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a"), rec("b")])
    store.flush(run_id)
    rows = {r["project_key"]: r for r in store.projects()}
    assert rows[key("a")]["seen_generation"] == store.get_run(run_id).generation
    assert {r["last_confirmed_run_id"] for r in rows.values()}.isdisjoint({run_id})
    assert store.get_run(run_id).confirmed_count == 0


def _projects_bytes(store) -> tuple[int, int]:
    """(table bytes, index bytes) of ``projects``; SQLite: the file's pages in use, 0."""
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            sizes = "SELECT pg_table_size('projects'), pg_indexes_size('projects')"
            return tuple(conn.execute(sa.text(sizes)).one())
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        return pages - free, 0  # SQLite rewrites rows in place


def test_no_index_covers_a_column_the_flush_rewrites(store):
    from enum_pipeline.store.flush import _STAMP_COLS

    rewritten = set(_STAMP_COLS) | {"missing_since"}
    for index in sa.inspect(store.engine).get_indexes("projects"):
        assert rewritten.isdisjoint(index["column_names"]), index
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            options = conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE oid = 'projects'::regclass")
            ).scalar_one()
        assert f"fillfactor={t.PROJECTS_FILLFACTOR}" in options


def test_unchanged_runs_keep_projects_the_size_it_was(store):
    names = [f"p{i:04d}" for i in range(600)]
    for _ in range(2):
        run_once(store, {SCOPE: names})
        store.prune_staging(keep_runs=2)
    heap, index = _projects_bytes(store)
    for _ in range(4):
        run_once(store, {SCOPE: names})
        store.prune_staging(keep_runs=2)
    # Heap-only updates add no index entry, and each page prunes the previous run's row
    # versions itself. A non-HOT update would add one entry a row to every index each run
    # (3x the index here); the heap allows one run whose pruning another session's snapshot
    # held back (the test server is shared).
    now_heap, now_index = _projects_bytes(store)
    assert now_heap <= heap * 2
    assert now_index <= index * 1.5


def test_pruned_staging_leaves_nothing_and_keeps_the_two_newest_completed(store):
    first, _ = run_once(store, {SCOPE: ["a"]})
    second, _ = run_once(store, {SCOPE: ["a", "b"]})
    third, _ = run_once(store, {SCOPE: ["a", "b", "c"]})
    failed = []
    for _ in range(2):  # newer runs that failed after staging
        run_id = new_run_id()
        store.begin(run_id)
        store.stage(run_id, [rec("z")])
        store.fail(run_id, "test")
        failed.append(run_id)
    # finish_run (run_once) already pruned the first run's staging when the third completed;
    # the newest two runs (failed) and the two newest completed ones stay.
    assert store.prune_staging(keep_runs=2) == 0
    assert list(store.staged_rows(first)) == []
    assert [r["project_key"] for r in store.staged_rows(second)] == [key("a"), key("b")]
    assert len(list(store.staged_rows(third))) == 3
    assert all(len(list(store.staged_rows(r))) == 1 for r in failed)
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            assert len(staging_partitions(conn)) == 4  # the first run's partition is gone
    else:
        with store.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(t.staged_projects))
            assert count.scalar_one() == 2 + 3 + 1 + 1


def test_a_batch_repeating_staged_keys_keeps_first_sightings_and_counts_each_once(store):
    """Overlapping roots: a key staged again (in a later batch, or twice in one) is kept as
    first seen and counted once; on PostgreSQL this is the batch the fast COPY turns back and
    the run's later batches go the deduplicating way."""
    run_id = new_run_id()
    store.begin(run_id)
    assert store.stage(run_id, [rec("a"), rec("b")]) == 2
    again = [rec("b", default_branch="dev"), rec("c"), rec("c", default_branch="x")]
    assert store.stage(run_id, again) == 1
    assert store.stage(run_id, [rec("d")]) == 1
    info = store.get_run(run_id)
    assert (info.scanned_count, info.staged_count) == (6, 4)
    staged = {r["project_key"]: r for r in store.staged_rows(run_id)}
    assert sorted(staged) == [key("a"), key("b"), key("c"), key("d")]
    assert staged[key("b")]["default_branch"] == rec("b").default_branch
    assert staged[key("c")]["default_branch"] == rec("c").default_branch
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 4))
    store.flush(run_id)
    assert store.verify_and_confirm(run_id).flush_succeeded


def test_staged_rows_lost_before_the_flush_fail_verification_and_remove_nothing(store):
    """Staging that loses rows under a run (PostgreSQL: its partition dropped between batches,
    which the next batch makes again; SQLite: its rows deleted) no longer holds what the run
    scanned: verification fails, the run cannot complete, and nothing is removed."""
    run_once(store, {SCOPE: ["a", "b", "c"]})
    before = store.projects()
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a"), rec("b")])
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql(f'DROP TABLE "{t.staging_partition(run_id)}"')
        else:
            conn.execute(sa.delete(t.staged_projects).where(t.staged_projects.c.run_id == run_id))
    assert store.stage(run_id, [rec("c")]) == 1
    store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 3))
    store.flush(run_id)
    with pytest.raises(FlushVerificationError, match="staged 3 rows but its staging holds 1"):
        store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "failed"
    with pytest.raises(CleanupRefusedError):
        store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert store.project_keys() == {r["project_key"] for r in before}


def _staged_without_run(store, run_id: str) -> dict[str, dict]:
    return {
        r["project_key"]: {k: v for k, v in r.items() if k != "run_id"}
        for r in store.staged_rows(run_id)
    }


def test_a_key_twice_in_one_batch_keeps_its_first_sighting(store):
    """Within one batch too, the first sighting of a key is the one staged (PostgreSQL: the
    deduplicating way keeps the batch's order), whichever of the two sorts first."""
    run_id = new_run_id()
    store.begin(run_id)
    twice = [rec("k", default_branch=f"b{i}") for i in range(20)] + [rec("j")]
    for order in (twice, twice[::-1]):
        store.stage(run_id, order)
    staged = _staged_without_run(store, run_id)
    assert staged[key("k")]["default_branch"] == "b0"
    assert store.get_run(run_id).staged_count == 2
