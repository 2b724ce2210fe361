"""Issue 9, store side: a run removes only what its read could have seen, judged by the policy it
began with. Coverage (out of coverage, protected), identity baselines and acceptance, orphans and
their prune, the cleanup plan and its approval, the policy bound to the run; each on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.store import CleanupPolicy, StoreError
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import GONE, SCOPE, key
from enum_pipeline_tests.helpers import run_verdicts as run

OTHER = "fs:/srv/other"
ORG = "github:github.com:acme"
FULL = {"skip_names": [], "max_depth": None, "nested": True, "one_file_system": True}
FULL["follow_symlinks"] = False
LENIENT = CleanupPolicy(max_delete_count=None, max_delete_fraction=None)


def gh(name: str, visibility: str) -> ProjectRecord:
    """A GitHub-like record of ``ORG``."""
    return ProjectRecord(
        project_key=f"github:github.com:{name}",
        scope_key=ORG,
        source_kind="github",
        name=name,
        location=f"acme/{name}",
        vcs="git",
        attributes={"visibility": visibility, "private": visibility != "public"},
    )


def _row(store, k: str) -> dict:
    return next(r for r in store.projects() if r["project_key"] == k)


def _entries(result) -> dict[str, tuple[str, str]]:
    return {e.project_key: (e.action, e.reason) for e in result.entries}


# ------------------------------------------------------------------------- coverage


NARROWINGS = {
    "skip_names": (
        ["a", "vendor/b", "vendor/c", "d"],
        {**FULL, "skip_names": ["vendor"]},
        ["vendor/b", "vendor/c"],
        "vendor",
    ),
    "max_depth": (
        ["a", "deep/er/b", "deep/er/c", "d"],
        {**FULL, "max_depth": 1},
        ["deep/er/b", "deep/er/c"],
        "depth",
    ),
    "nested": (
        ["a", "a/sub/b", "a/c", "d"],
        {**FULL, "nested": False},
        ["a/sub/b", "a/c"],
        "nested",
    ),
}


@pytest.mark.parametrize("narrowing", sorted(NARROWINGS))
def test_narrowed_settings_remove_nothing_and_list_rows_out_of_coverage(store, narrowing):
    names, narrowed, excluded, word = NARROWINGS[narrowing]
    run(store, {SCOPE: names}, verdicts={SCOPE: {"coverage": FULL}})
    seen = [n for n in names if n not in excluded]
    for _ in range(2):
        run_id, result = run(store, {SCOPE: seen}, verdicts={SCOPE: {"coverage": narrowed}})
        assert (result.removed, result.would_remove, result.status) == (0, 0, "noop")
        assert store.project_keys() == {key(n) for n in names}
        entries = _entries(result)
        assert set(entries) == {key(n) for n in excluded}
        for n in excluded:
            action, reason = entries[key(n)]
            assert action == "keep" and reason.startswith("out of coverage") and word in reason
            row = _row(store, key(n))
            assert row["out_of_coverage_since"] is not None
            assert word in row["out_of_coverage_reason"]
        assert result.out_of_coverage == len(excluded)
        assert [e.project_key for e in store.cleanup_entries(run_id)] == sorted(entries)
    listed = {r["project_key"]: r for r in store.kept_projects()}
    assert set(listed) == {key(n) for n in excluded}
    # widened again: what the run sees loses its mark, the rest becomes a candidate
    run(store, {SCOPE: [*seen, excluded[0]]}, verdicts={SCOPE: {"coverage": FULL}}, policy=LENIENT)
    assert _row(store, key(excluded[0]))["out_of_coverage_since"] is None
    assert key(excluded[1]) not in store.project_keys()


def test_protected_locations_are_kept_with_their_reason(store):
    run(store, {SCOPE: ["a", "mnt/b", "mnt/c", "link/d", "e"]})
    protected = {"protected": ("/srv/src/mnt", "/srv/src/link")}
    protected["protected_reasons"] = {
        "/srv/src/mnt": "foreign mount",
        "/srv/src/link": "symlink not followed",
    }
    _, result = run(store, {SCOPE: ["a"]}, verdicts={SCOPE: protected}, policy=LENIENT)
    assert result.removed == 1 and key("e") not in store.project_keys()
    entries = _entries(result)
    assert entries[key("mnt/b")] == ("keep", "protected: /srv/src/mnt (foreign mount)")
    assert entries[key("link/d")] == ("keep", "protected: /srv/src/link (symlink not followed)")
    assert entries[key("e")][0] == "remove"
    assert {key("mnt/b"), key("mnt/c"), key("link/d")} <= store.project_keys()


# ------------------------------------------------------------------------- identity


@pytest.mark.parametrize(
    "changed",
    [{"st_dev": 2}, {"real_path": "/mnt/elsewhere"}],
    ids=["device", "real_path"],
)
def test_changed_identity_holds_three_runs_and_is_cleaned_after_acceptance(store, changed):
    before = {"st_dev": 1, "real_path": "/srv/src"}
    after = {**before, **changed}
    run(store, {SCOPE: ["a", "b", "c"]}, verdicts={SCOPE: {"identity": before}})
    held = []
    for _ in range(3):
        run_id, result = run(store, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": after}})
        held.append(run_id)
        assert (result.removed, result.held) == (0, 2)
        reason = result.scopes[0].skipped_reason
        assert "changed identity" in reason and next(iter(changed)) in reason
        assert _entries(result)[key("b")] == ("keep", reason)
        assert store.project_keys() == {key("a"), key("b"), key("c")}
    accepted = store.accept_scope_identity(SCOPE, accepted_by="tester")
    assert accepted["run_id"] == held[-1] and accepted["previous_identity"] == before
    reading = next(s for s in store.scopes(held[-1]) if s.scope_key == SCOPE)
    assert reading.identity_accepted_by == "tester" and reading.trusted
    _, result = run(store, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": after}})
    assert sorted(result.removed_keys) == [key("b"), key("c")]


def test_the_old_identity_returning_is_trusted_again(store):
    run(store, {SCOPE: ["a", "b"]}, verdicts={SCOPE: {"identity": {"st_dev": 1}}})
    _, held = run(store, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": {"st_dev": 2}}})
    assert held.removed == 0 and held.held == 1
    _, back = run(store, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": {"st_dev": 1}}})
    assert back.removed_keys == [key("b")]


def test_accepting_an_unknown_run_or_scope_names_what_exists(store):
    with pytest.raises(StoreError, match="no completed run read scope"):
        store.accept_scope_identity(SCOPE, accepted_by="tester")
    first, _ = run(store, {SCOPE: ["a"]})
    with pytest.raises(StoreError, match=f"newest that do: {first}"):
        store.accept_scope_identity(SCOPE, "no-such-run", accepted_by="tester")


def test_a_code_host_owner_whose_token_disappears_keeps_its_private_repositories(store):
    repos = [gh("pub1", "public"), gh("pub2", "public"), gh("priv1", "private")]
    repos.append(gh("int1", "internal"))
    member = {
        "identity": {"host": "api.github.com", "owner": "acme", "owner_id": 7, "principal": "bot"},
        "coverage": {
            "visibilities": ["internal", "private", "public"],
            "include_forks": True,
            "include_archived": True,
        },
    }
    anonymous = {
        "identity": {**member["identity"], "principal": "anonymous"},
        "coverage": {**member["coverage"], "visibilities": ["public"]},
    }
    run(store, {ORG: repos}, verdicts={ORG: member})
    everything = store.project_keys()
    for _ in range(3):
        _, result = run(store, {ORG: repos[:2]}, verdicts={ORG: anonymous})
        assert result.removed == 0 and "principal" in result.scopes[0].skipped_reason
        assert store.project_keys() == everything
    store.accept_scope_identity(ORG, accepted_by="tester")  # anonymous reads from now on
    _, result = run(store, {ORG: repos[:2]}, verdicts={ORG: anonymous}, policy=LENIENT)
    assert result.removed == 0 and store.project_keys() == everything
    assert {a for a, _ in _entries(result).values()} == {"keep"}
    assert all(r.startswith("out of coverage") for _, r in _entries(result).values())
    assert result.out_of_coverage == 2


# ------------------------------------------------------------------------- orphans


def test_rows_of_an_unconfigured_scope_are_orphaned_and_only_pruned_explicitly(store):
    both = [SCOPE, OTHER]
    run(store, {SCOPE: ["a", "b"], OTHER: ["x", "y"]}, configured=both)
    for _ in range(2):
        run_id, result = run(store, {SCOPE: ["a", "b"]}, configured=[SCOPE], policy=LENIENT)
        assert result.removed == 0 and result.orphaned == 2
        entries = _entries(result)
        assert {k for k, (a, r) in entries.items() if r.startswith("orphan")} == {
            key("x", OTHER),
            key("y", OTHER),
        }
    row = _row(store, key("x", OTHER))
    assert row["orphaned_since"] is not None and OTHER in row["orphan_reason"]
    assert {r["project_key"] for r in store.kept_projects()} == {key("x", OTHER), key("y", OTHER)}

    dry = store.prune_orphans(dry_run=True)
    assert (dry.status, dry.removed, dry.would_remove) == ("blocked", 0, 2)
    blocked = store.prune_orphans()  # the whole scope would go: the guard holds it back
    assert blocked.status == "blocked" and "would remove all 2" in blocked.reason
    assert len(store.project_keys()) == 4
    pruned = store.prune_orphans(approved_by="tester")
    assert (pruned.status, pruned.removed) == ("done", 2)
    assert store.project_keys() == {key("a"), key("b")}
    history = store.history(pruned.run_id)
    assert {h.project_key for h in history} == {key("x", OTHER), key("y", OTHER)}
    assert all(h.reason.startswith("orphan") for h in history)
    assert sorted(store.restore(pruned.run_id)) == [key("x", OTHER), key("y", OTHER)]
    # configured again (not read this time): the marks go, nothing is removed
    run(store, {SCOPE: ["a", "b"]}, configured=both, policy=LENIENT)
    assert _row(store, key("y", OTHER))["orphaned_since"] is None
    assert store.kept_projects() == [] and len(store.project_keys()) == 4


def test_an_ad_hoc_run_without_configured_scopes_orphans_nothing(store):
    run(store, {SCOPE: ["a"], OTHER: ["x"]}, configured=[SCOPE, OTHER])
    _, result = run(store, {SCOPE: ["a"]}, configured=None)
    assert result.orphaned == 0 and store.kept_projects() == []


# ------------------------------------------------------------------------- plan, guard, policy


def test_blocked_cleanup_counts_nothing_removed_and_its_plan_is_persisted(store):
    policy = CleanupPolicy(max_delete_count=1)
    run(store, {SCOPE: ["a", "b", "c"]}, policy=policy)
    run_id, result = run(store, {SCOPE: ["a"]}, policy=policy)
    assert (result.status, result.removed, result.would_remove) == ("blocked", 0, 2)
    planned = store.cleanup_entries(run_id)
    assert [(e.project_key, e.action) for e in planned] == [
        (key("b"), "remove"),
        (key("c"), "remove"),
    ]
    dry = store.safe_cleanup_old_projects(run_id, dry_run=True, witness=GONE)
    assert (dry.removed, dry.would_remove, dry.dry_run) == (0, 2, True)
    store.approve_cleanup(run_id, "tester")
    with store.engine.begin() as conn:  # one more became stale after the approval
        conn.execute(
            sa.update(t.projects)
            .where(t.projects.c.project_key == key("a"))
            .values(seen_generation=0)
        )
    again = store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert again.status == "blocked" and "not in the approved plan" in again.reason
    assert len(store.project_keys()) == 3
    generation = store.get_run(run_id).generation
    with store.engine.begin() as conn:  # seen again: the plan is the approved one once more
        conn.execute(
            sa.update(t.projects)
            .where(t.projects.c.project_key == key("a"))
            .values(seen_generation=generation)
        )
    done = store.safe_cleanup_old_projects(run_id, witness=GONE)
    assert (done.status, sorted(done.removed_keys)) == ("done", [key("b"), key("c")])


def test_the_cleanup_applies_the_policy_recorded_at_begin(store):
    strict = CleanupPolicy(max_delete_count=1)
    run(store, {SCOPE: ["a", "b", "c"]}, policy=strict)
    run_id, _ = run(store, {SCOPE: ["a"]}, policy=strict, cleanup=False)
    assert store.get_run(run_id).policy == strict.model_dump(mode="json")
    loose = CleanupPolicy(max_delete_count=None, max_delete_fraction=None, allow_empty=True)
    result = store.safe_cleanup_old_projects(
        run_id, loose, witness=GONE
    )  # a caller cannot loosen it
    assert result.status == "blocked" and "max_delete_count=1" in result.reason
    assert len(store.project_keys()) == 3


def test_the_guard_counts_the_population_before_the_run(store):
    old = [f"old{i}" for i in range(20)]
    new = [f"new{i}" for i in range(20)]
    run(store, {SCOPE: old})
    _, replaced = run(store, {SCOPE: new})  # the whole content replaced: 20 of 20 would go
    assert replaced.status == "blocked" and "would remove all 20" in replaced.reason
    assert replaced.scopes[0].total == 20


def test_half_of_a_scope_of_twenty_is_held_back_by_default(store):
    names = [f"p{i}" for i in range(20)]
    run(store, {SCOPE: names})
    _, result = run(store, {SCOPE: names[:10]})
    assert result.status == "blocked" and "10 of 20" in result.reason
    _, fewer = run(store, {SCOPE: names[:11]})  # 9 of the 20: under half
    assert (fewer.status, fewer.removed) == ("done", 9)
