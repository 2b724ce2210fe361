"""The invariants of the model-based test, one check function each, and the database snapshot
they read: I1–I10 of DESIGN.md (``i1_no_loss`` … ``i10_confirmed_absence``).

``model_machine.InventoryMachine`` takes a ``snapshot`` after every store call and hands the
previous and the current one to these functions (``InventoryMachine._check``); a new invariant
is a new ``iN_…`` function here, called from there. They read the store and the model
(``model_oracle``), never drive either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
import sqlalchemy as sa

from enum_pipeline.sources.kinds import outside_coverage
from enum_pipeline.store import CleanupPolicy, InventoryStore, RunActiveError
from enum_pipeline.store import schema as t
from enum_pipeline_tests.model_oracle import STAGED_IS_SEEN, Model, overlap, under

_RUN_IDS = iter(range(1, 10**12))


def next_run_id() -> str:
    """A run id shaped like a Dagster run id; sequential, so a replayed example draws the same."""
    return f"00000000-0000-4000-8000-{next(_RUN_IDS):012d}"


@dataclass
class Snapshot:
    rows: dict[str, dict[str, Any]]
    runs: dict[str, dict[str, Any]]
    history: dict[int, dict[str, Any]]
    cleanups: dict[str, dict[str, Any]]
    scopes: dict[tuple[str, str], dict[str, Any]]
    entries: dict[tuple[str, str], dict[str, Any]]


def snapshot(store: InventoryStore) -> Snapshot:
    with store.engine.connect() as conn:
        rows = {r["project_key"]: dict(r) for r in conn.execute(sa.select(t.projects)).mappings()}
        runs = {r["run_id"]: dict(r) for r in conn.execute(sa.select(t.run_state)).mappings()}
        history = {r["id"]: dict(r) for r in conn.execute(sa.select(t.removed_projects)).mappings()}
        cleanups = {r["run_id"]: dict(r) for r in conn.execute(sa.select(t.cleanups)).mappings()}
        scopes = {
            (r["run_id"], r["scope_key"]): dict(r)
            for r in conn.execute(sa.select(t.run_scopes)).mappings()
        }
        entries = {
            (r["run_id"], r["project_key"]): dict(r)
            for r in conn.execute(sa.select(t.cleanup_entries)).mappings()
        }
    return Snapshot(rows, runs, history, cleanups, scopes, entries)


ROW_FIELDS = ("project_key", "scope_key", "location", "run_id", "seen_generation")
ROW_FIELDS += ("last_confirmed_run_id", "confirmed_generation", "content_hash")


# ------------------------------------------------------------------ the invariants, one each


def i1_no_loss(m: Model, prev: Snapshot, cur: Snapshot, gone: list[str], cleanup) -> list[str]:
    """I1: a row goes only in the cleanup of a completed, verified run that read its scope
    completely and trusted it, outside the protected locations, and did not see the row."""
    if cleanup is None:
        return [f"rows {gone} disappeared outside a cleanup"]
    run_id = cleanup[0]
    run = cleaning_run(prev, cleanup)
    if run is None:
        cleaner = prev.runs.get(run_id)
        return [f"cleanup of {run_id} ({cleaner and cleaner['status']}) removed {gone}"]
    gen = run["generation"]
    problems = []
    for k in gone:
        row = prev.rows[k]
        verdict = cur.scopes.get((run_id, row["scope_key"]))
        if verdict is None or not verdict["complete"]:
            problems.append(f"{k}: its scope was not read completely by {run_id}")
        elif any(under(row["location"], p) for p in verdict["protected"] or []):
            problems.append(f"{k}: under a protected sub-scope of {run_id}")
        elif not verdict["trusted"]:
            problems.append(f"{k}: {run_id}'s reading of its scope is not trusted")
        if k in m.runs[run_id].staged:
            problems.append(f"{k}: run {run_id} saw it")
        if row["seen_generation"] is None or row["seen_generation"] >= gen:
            problems.append(f"{k}: seen_generation {row['seen_generation']} >= {gen}")
    return problems


def cleaning_run(prev: Snapshot, cleanup) -> dict[str, Any] | None:
    """The ``run_state`` row of the cleanup's run when it may clean up (completed, verified)."""
    run = prev.runs.get(cleanup[0]) if cleanup is not None else None
    if run is None or run["status"] != "completed" or not run["flush_succeeded"]:
        return None
    return run


def i2_completeness(cur: Snapshot, m: Model, where: str) -> None:
    """I2: every completed run's rows are present and confirmed by it or a newer run, unless a
    newer run's cleanup removed them since."""
    latest_removal: dict[str, int] = {}
    for h in sorted(cur.history.values(), key=lambda h: h["id"]):
        latest_removal[h["project_key"]] = cur.runs[h["removed_by_run_id"]]["generation"]
    for rid, r in cur.runs.items():
        if r["status"] != "completed":
            continue
        for k in m.runs[rid].staged:
            if latest_removal.get(k, -1) > r["generation"]:
                continue  # removed since by a newer run's cleanup (I1 vouched for it)
            row = cur.rows.get(k)
            assert row is not None, f"I2: {k}, seen by completed run {rid}, is missing {where}"
            assert (row["confirmed_generation"] or 0) >= r["generation"], (
                f"I2: {k} confirmed by generation {row['confirmed_generation']}, but "
                f"completed run {rid} (generation {r['generation']}) saw it {where}"
            )
    for k, row in cur.rows.items():
        if row["last_confirmed_run_id"] is not None:
            assert (
                cur.runs[row["last_confirmed_run_id"]]["generation"] == row["confirmed_generation"]
            ), f"I2: {k} confirmation fields disagree {where}"


def i3_truthful_status(cur: Snapshot, where: str) -> None:
    """I3: ``completed`` iff the flush was verified; a run is active, completed or failed."""
    for rid, r in cur.runs.items():
        assert r["status"] in ("active", "completed", "failed"), f"I3: {rid} is {r['status']}"
        if r["status"] == "completed":
            assert r["flush_succeeded"], f"I3: {rid} completed without a verified flush"
        if r["status"] == "failed":
            assert not r["flush_succeeded"], (
                f"I3: run {rid} is failed with flush_succeeded=True ({r['error']}) {where}: "
                "completed iff flush_succeeded is violated"
            )


def i4_single_writer(cur: Snapshot, where: str) -> None:
    """I4: one writer per scope: no two active runs' scope sets overlap (NULL: the whole
    inventory), and generations are unique."""
    active = sorted((v for v in cur.runs.values() if v["status"] == "active"), key=_gen)
    for i, a in enumerate(active):
        for b in active[i + 1 :]:
            assert not overlap(a["scopes"], b["scopes"]), (
                f"I4: active runs {a['run_id']} {a['scopes']} and {b['run_id']} {b['scopes']} "
                f"read a common scope {where}"
            )
    gens = [v["generation"] for v in cur.runs.values()]
    assert len(gens) == len(set(gens)), f"I4: a generation handed out twice {where}"


def _gen(run: dict[str, Any]) -> int:
    return run["generation"]


def i5_ordering(m: Model, cur: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I5: a cleanup never removes what a run at or after its generation flushed, nor (with
    ``STAGED_IS_SEEN``) what a newer run's scan staged."""
    gen = run["generation"]
    newer = [r for r, v in cur.runs.items() if v["generation"] > gen]
    problems = []
    for k in gone:
        if m.max_flushed_gen.get(k, 0) >= gen:
            problems.append(
                f"I5: {k} was seen by generation {m.max_flushed_gen[k]}, at or after the "
                f"cleaning run's {gen} (newer runs: {len(newer)})"
            )
        elif STAGED_IS_SEEN and m.max_staged_gen.get(k, 0) > gen:
            newer_run = max((r for r in m.runs.values() if k in r.staged), key=lambda r: r.gen)
            problems.append(
                f"I1/I5: {k} was seen by the scan of newer run {newer_run.run_id} "
                f"(generation {newer_run.gen}, {newer_run.status}, staged but not flushed), "
                f"yet the cleanup of generation {gen} removed it"
            )
    return problems


def i6_history_append_only(prev: Snapshot, cur: Snapshot, cleanup, where: str) -> dict:
    """I6: history is append-only (only restored_at/by may be filled in, once) and grows only
    in a cleanup. Returns the entries this store call added."""
    for hid, h in prev.history.items():
        now = cur.history.get(hid)
        assert now is not None, f"I6: history entry {hid} vanished {where}"
        for f in ("project_key", "removed_by_run_id", "row", "removed_at"):
            assert now[f] == h[f], f"I6: history entry {hid} changed {f} {where}"
        if h["restored_at"] is not None:
            assert now["restored_at"] == h["restored_at"], f"I6: re-restored {hid}"
    new_hist = {hid: h for hid, h in cur.history.items() if hid not in prev.history}
    assert cleanup is not None or not new_hist, f"I6: history grew outside a cleanup {where}"
    return new_hist


def i6_removals_recorded(
    prev: Snapshot, gone: list[str], new_hist: dict, run: dict[str, Any]
) -> list[str]:
    """I6: every removed row has a history entry of the cleaning run, holding the row."""
    by_key = {h["project_key"]: h for h in new_hist.values()}
    problems = []
    for k in gone:
        row, h = prev.rows[k], by_key.get(k)
        if h is None or h["removed_by_run_id"] != run["run_id"]:
            problems.append(f"I6: {k} removed without a history entry of {run['run_id']}")
            continue
        for f in ROW_FIELDS:
            if h["row"].get(f) != row[f]:
                problems.append(f"I6: history of {k} has {f}={h['row'].get(f)!r}")
    return problems


class Witnessed(Protocol):
    """What I10 reads of the cleanup's witness (``model_machine.ModelWitness``)."""

    gone: set[str]  # the projects it confirmed gone


def i10_confirmed_absence(
    gone: list[str], new_hist: dict, run: dict[str, Any], witness: Witnessed | None
) -> list[str]:
    """I10: every removal carries a confirmation of absence taken after the read that missed
    it (the run ended), from the witness, which saw it gone from the world."""
    by_key = {h["project_key"]: h for h in new_hist.values()}
    problems = []
    for k in gone:
        h = by_key.get(k)
        if h is None or not h["confirmation"] or h["confirmed_at"] is None:
            problems.append(f"I10: {k} removed without a confirmation of its absence")
        elif run["finished_at"] is None or h["confirmed_at"] <= run["finished_at"]:
            problems.append(f"I10: {k}'s confirmation {h['confirmed_at']} precedes the read's end")
        elif witness is None or k not in witness.gone:
            problems.append(f"I10: {k} removed though its witness did not see it gone")
    return problems


def i6_history_only_of_removed_rows(new_hist: dict, gone: list[str], where: str) -> None:
    """I6: a new history entry is of a row that this store call removed."""
    for hid, h in new_hist.items():
        assert h["project_key"] in gone, f"I6: history {hid} for a row still present"


def i7_coverage(prev: Snapshot, cur: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I7: no row outside the cleaning run's coverage of its scope is removed."""
    problems = []
    for k in gone:
        row = prev.rows[k]
        verdict = cur.scopes.get((run["run_id"], row["scope_key"]))
        if verdict is None:
            continue  # I1 names it
        locations = [
            r["location"] for r in prev.rows.values() if r["scope_key"] == row["scope_key"]
        ]
        coverage = verdict["coverage"] or {}
        if outside_coverage("filesystem", coverage, row, locations) or any(
            f"/{n}/" in row["location"] for n in coverage.get("skip_names") or []
        ):
            problems.append(
                f"I7: {k} lies outside the coverage of {run['run_id']} ({verdict['coverage']})"
            )
    return problems


def i8_bound_policy(prev: Snapshot, gone: list[str], run: dict[str, Any]) -> list[str]:
    """I8: the deletion guard and the grace are those of the policy the run began with,
    whatever the request passed (an approval of the listed plan releases the guard)."""
    gen, run_id = run["generation"], run["run_id"]
    policy = CleanupPolicy.model_validate(run["policy"])
    problems = []
    per_scope = Counter(prev.rows[k]["scope_key"] for k in gone)
    approved = all(prev.entries.get((run_id, k), {}).get("approved") for k in gone)
    for scope, n in per_scope.items():
        size = sum(  # the scope's population before the run
            1
            for r in prev.rows.values()
            if r["scope_key"] == scope and (r["first_seen_generation"] or 0) < gen
        )
        reason = policy.guard(scope, n, size)
        if reason and not approved:
            problems.append(f"removed despite the deletion guard: {reason}")
    for k in gone:
        row = prev.rows[k]
        if row["missed_runs"] + 1 < policy.missing_runs_before_delete:
            problems.append(f"{k}: missed {row['missed_runs'] + 1} runs, grace not over")
    return problems


def i9_live_run_not_taken_over(store: InventoryStore) -> None:
    """I9: while the active run's heartbeat is fresh (its holder not provably gone), a second
    begin is refused."""
    with pytest.raises(RunActiveError):
        store.begin(next_run_id())


def i9_live_run_not_reaped(store: InventoryStore) -> None:
    """I9: the reaper leaves a run with a fresh heartbeat (and its lease held) alone."""
    assert store.reap() == []


def rows_appear_only_as_the_model_expects(prev: Snapshot, cur: Snapshot, m: Model, where: str):
    """Rows appear only from a flush (what the run staged) or a restore (from history)."""
    for k in cur.rows.keys() - prev.rows.keys():
        assert k in m.rows, f"a row appeared that the model did not expect: {k} {where}"
