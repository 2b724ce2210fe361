"""GitLab groups past its 10,000-project counting limit (a loopback GitLab that, like the real
one, omits ``x-total`` past 10,000): the keyset listing is proven whole by GitLab's counts of
ranges of ids, each under the limit; anything that moved meanwhile leaves the scope incomplete,
in one sentence; across two runs through the store nothing is lost."""

from __future__ import annotations

import time

import pytest

from enum_pipeline.sources.gitlab import RANGE_SIZE, GitLabSource
from enum_pipeline.sources.witness import SourceWitness
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GitLabApp, scan
from enum_pipeline_tests.helpers import run_source

TOKEN_ENV = "ENUM_TEST_BIG_GITLAB_TOKEN"
TOKEN = "test-only-gitlab-token-NOT-REAL-2500"
SIZE = 25_000


@pytest.fixture
def big(monkeypatch) -> GitLabApp:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = GitLabApp(token=TOKEN)
    app.add_group("huge", SIZE - 1000)
    app.add_group("huge/sub", 1000)
    return app


def _source(host) -> GitLabSource:
    return GitLabSource("huge", base_url=host.url, token_env=TOKEN_ENV, sleep=FakeSleep())


def _counts(app: GitLabApp) -> list:
    return [r for r in app.requests if r.query.get("per_page") == "1"]


def test_a_group_gitlab_will_not_count_is_proven_whole_by_ranges(big):
    with FakeCodeHost(big) as host:
        started = time.perf_counter()
        records, (verdict,) = scan(_source(host))
        seconds = time.perf_counter() - started
    assert verdict.complete, verdict.reason
    assert len(records) == SIZE
    counts = _counts(big)
    # one count of the whole group (refused: too many), then one a range
    assert len(counts) == 1 + SIZE // RANGE_SIZE
    assert all("x-total" not in r.query for r in counts)
    print(f"listed {SIZE} projects in {seconds:.2f}s with {len(big.requests)} requests")


def test_a_project_deleted_during_the_listing_leaves_the_scope_incomplete(big):
    victim = big.projects[3]["id"]
    big.after_page(40, lambda: big.delete_project(victim))
    with FakeCodeHost(big) as host:
        records, (verdict,) = scan(_source(host))
    assert not verdict.complete
    assert "GitLab counts" in verdict.reason and "were read" in verdict.reason


def test_a_project_moved_in_behind_the_listing_leaves_the_scope_incomplete(big):
    """A project transferred into the group keeps its old (low) id: the keyset listing has
    passed it, and only the range count sees it."""
    big.add_group("elsewhere", 0)
    moved = big.add_project("elsewhere", "moved-in", id=5)

    def move() -> None:
        moved["namespace"] = dict(big.projects[0]["namespace"])

    big.after_page(120, move)
    with FakeCodeHost(big) as host:
        records, (verdict,) = scan(_source(host))
    assert not verdict.complete
    assert "GitLab counts 5001" in verdict.reason


def test_a_listing_cut_short_past_the_limit_says_it_cannot_be_proven(big):
    big.cut_after(150)
    with FakeCodeHost(big) as host:
        records, (verdict,) = scan(_source(host))
    assert len(records) == 15_000 and not verdict.complete
    assert "no x-total" in verdict.reason and "incomplete on every run" in verdict.reason


def test_two_runs_of_a_huge_group_with_deletions_between_lose_nothing_else(store, big):
    with FakeCodeHost(big) as host:
        verdict, _ = run_source(store, _source(host), SourceWitness([_source(host)]))
        assert verdict.complete and store.count_projects() == SIZE
        gone = [p["id"] for p in big.projects[100:110]]
        for pid in gone:
            big.delete_project(pid)
        big.fail_page(200, status=500, times=None)  # a page that never answers
        verdict, cleanup = run_source(store, _source(host), SourceWitness([_source(host)]))
        assert not verdict.complete and cleanup.removed == 0
        assert store.count_projects() == SIZE
        big.faults.clear()
        verdict, cleanup = run_source(store, _source(host), SourceWitness([_source(host)]))
        assert verdict.complete, verdict.reason
        assert cleanup.removed == len(gone)
        assert store.count_projects() == SIZE - len(gone)
        source = _source(host)
        removed = {h.project_key for h in store.history(cleanup.run_id)}
        assert removed == {f"gitlab:{source.host}:{pid}" for pid in gone}
