"""Operations at any size (issue 19): history, restore, approval and prune of more projects than
one statement may bind (PostgreSQL: 65,535 parameters; SQLite: 32,766, or 999 on old builds).

The removals are made the way the store makes them (``history.move_to_history`` inside a
transaction, ``prune_orphans``), not through a run's cleanup, so these tests do not depend on
what decides a removal.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from enum_pipeline.store import schema as t
from enum_pipeline.store.entries import approved_keys, save_entries
from enum_pipeline.store.history import move_to_history
from enum_pipeline.store.records import CleanupEntry, utcnow

N = 70_000  # more than PostgreSQL's 65,535 bind parameters a statement
BIG = "filesystem:/srv/big"


def _fill(store, n: int = N) -> None:
    """``n`` projects in scope ``BIG``, in one set-based statement (a recursive CTE counts)."""
    p = t.projects
    now = utcnow()
    seq = sa.select(sa.literal(1).label("i")).cte("seq", recursive=True)
    seq = seq.union_all(sa.select(seq.c.i + 1).where(seq.c.i < n))
    name = sa.literal("p").op("||")(sa.cast(seq.c.i, sa.Text))
    values = {
        "project_key": sa.literal(BIG + "/").op("||")(name),
        "scope_key": sa.literal(BIG),
        "source_kind": sa.literal("filesystem"),
        "name": name,
        "location": sa.literal("/srv/big/").op("||")(name),
        "vcs": sa.literal("git"),
        "attributes": sa.literal({"size": 1}, t.JSONType),
        "last_commit_at": sa.literal(now - timedelta(days=3), t.UTCDateTime()),
        "content_hash": sa.literal("0" * 40),
        "run_id": sa.literal("seed"),
        "seen_generation": sa.literal(1),
        "first_seen_generation": sa.literal(1),
        "first_seen_at": sa.literal(now, t.UTCDateTime()),
        "last_seen_at": sa.literal(now, t.UTCDateTime()),
        "changed_at": sa.literal(now, t.UTCDateTime()),
    }
    with store.engine.begin() as conn:
        conn.execute(sa.insert(p).from_select(list(values), sa.select(*values.values())))


def _count(store, table, *where) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()


def _rows(store, keys) -> dict[str, dict]:
    p = t.projects
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(p).where(p.c.project_key.in_(keys))).mappings()
        return {r["project_key"]: dict(r) for r in rows}


@pytest.mark.slow  # tens of seconds a backend; scripts/test (plain pytest) runs it
def test_history_and_restore_of_a_removal_of_70000_projects(store):
    _fill(store)
    p, h = t.projects, t.removed_projects
    keys = store.project_keys()
    sample = _rows(store, sorted(keys)[::7001])
    with store.engine.begin() as conn:
        removed = move_to_history(conn, p.c.scope_key == BIG, "big-cleanup", utcnow())
    assert len(removed) == N and store.count_projects() == 0

    listed = store.history("big-cleanup")
    assert len(listed) == N and {r.project_key for r in listed} == keys
    assert [r.id for r in listed] == sorted((r.id for r in listed), reverse=True)
    del listed

    # three keys came back meanwhile (changed): a restore skips them and leaves them as they are
    present = sorted(sample)[:3]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(p), [sample[k] | {"name": "changed"} for k in present])

    restored = store.restore("big-cleanup", restored_by="tester")
    assert len(restored) == N - 3 and set(restored) == keys - set(present)
    assert store.project_keys() == keys
    again = _rows(store, list(sample))
    assert all(again[k]["name"] == "changed" for k in present)
    assert all(again[k] == sample[k] for k in sample if k not in present)
    assert _count(store, h, h.c.restored_at.is_(None)) == 0
    assert _count(store, h, h.c.restored_by == "tester") == N
    assert store.restore("big-cleanup") == []


@pytest.mark.slow  # tens of seconds a backend; scripts/test (plain pytest) runs it
def test_approval_of_a_blocked_plan_of_70000_removals(store):
    run_id = "big-blocked"
    entries = [
        CleanupEntry(f"{BIG}/p{i}", f"p{i}", BIG, f"/srv/big/p{i}", "remove", "not seen")
        for i in range(N)
    ] + [CleanupEntry(f"{BIG}/kept", "kept", BIG, "/srv/big/kept", "keep", "protected")]
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(t.cleanups).values(
                run_id=run_id, generation=1, status="blocked", updated_at=utcnow()
            )
        )
        save_entries(conn, run_id, entries, set())
    approval = store.approve_cleanup(run_id, "tester")
    assert approval["approved_max"] == N
    with store.engine.connect() as conn:
        approved = approved_keys(conn, run_id)
    assert len(approved) == N and f"{BIG}/kept" not in approved
    assert store.cleanup_record(run_id).approved_by == "tester"


@pytest.mark.slow  # tens of seconds a backend; scripts/test (plain pytest) runs it
def test_prune_of_70000_orphans_and_its_restore(store):
    _fill(store)
    p = t.projects
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(p).values(orphaned_since=utcnow(), orphan_reason=f"orphan: {BIG} gone")
        )
    result = store.prune_orphans(approved_by="tester")
    assert result.status == "done" and result.removed == N and store.count_projects() == 0
    ce, h = t.cleanup_entries, t.removed_projects
    assert _count(store, ce, ce.c.run_id == result.run_id) == N
    assert _count(store, h, h.c.removed_by_run_id == result.run_id, h.c.reason.is_not(None)) == N

    assert len(store.restore(result.run_id)) == N
    assert store.count_projects() == N


def test_restore_brings_each_row_back_exactly_as_saved(store):
    """The set-based restore on a few rows of every kind of value: every column as it was (a
    time without microseconds, JSON strings, booleans and nulls, quotes), missing marks
    cleared."""
    _fill(store, 3)
    p = t.projects
    whole_second = utcnow().replace(microsecond=0)
    with store.engine.begin() as conn:
        conn.execute(sa.update(p).values(missing_since=utcnow(), missed_runs=2))
        conn.execute(
            sa.update(p)
            .where(p.c.name == "p1")
            .values(
                attributes={"s": "x", "l": [1, 2.5, True, None, "é\"'"]},
                markers=["pyproject.toml"],
                topics=["a", "b"],
                remotes={"origin": "git@h:o/r.git"},
                archived=True,
                fork=False,
                stars=2**40,
                description="quote \" and ' and \\",
                last_activity_at=whole_second,
                out_of_coverage_since=whole_second,
                out_of_coverage_reason="skipped",
            )
        )
        conn.execute(sa.update(p).where(p.c.name == "p2").values(attributes="text", markers=7))
    before = store.projects()
    with store.engine.begin() as conn:
        move_to_history(conn, p.c.scope_key == BIG, "small", utcnow())
    assert sorted(store.restore("small")) == [r["project_key"] for r in before]
    assert store.projects() == [r | {"missing_since": None, "missed_runs": 0} for r in before]
    assert store.restore("small") == []
