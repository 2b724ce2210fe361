"""Scan-time filters (include / exclude patterns, topics, GitLab sub-groups left out) are part
of a listing's coverage: what a filter leaves out is kept and marked outside coverage, never
removed; narrowing or widening a filter between runs loses nothing (both backends, real runs
through the store against loopback hosts, a witness that would confirm anything gone)."""

from __future__ import annotations

import pytest

from enum_pipeline.config import ConfigError, parse_config
from enum_pipeline.sources.filters import ListingFilter
from enum_pipeline.sources.gitea import GiteaSource
from enum_pipeline.sources.github import GitHubSource
from enum_pipeline.sources.gitlab import GitLabSource
from enum_pipeline_tests.fake_codehosts import (
    FakeCodeHost,
    FakeSleep,
    GiteaApp,
    GitHubApp,
    GitLabApp,
    scan,
)
from enum_pipeline_tests.helpers import run_source

TOKEN_ENV = "ENUM_TEST_FILTER_TOKEN"
TOKEN = "test-only-filter-token-NOT-REAL-0022"


def _github(n: int = 40) -> GitHubApp:
    app = GitHubApp(token=TOKEN)
    app.add_owner("Acme", 0)
    for i in range(n):
        prefix = "svc" if i % 2 else "lib"
        topics = ["python"] if i % 4 == 0 else ["go"]
        app.add_repo("Acme", f"{prefix}-{i:03d}", topics=topics)
    return app


NARROWINGS = [
    ({}, {"include": ["svc-*"]}, "matches no include pattern"),
    ({}, {"exclude": ["LIB-*"]}, "matches exclude pattern"),
    ({}, {"topics": ["python"]}, "carries none of the topics"),
    ({"include": ["*"]}, {"include": ["svc-*"], "exclude": ["svc-00*"]}, "matches"),
]


@pytest.mark.parametrize(("wide", "narrow", "reason"), NARROWINGS)
def test_narrowing_then_widening_a_github_filter_loses_nothing(
    store, monkeypatch, wide, narrow, reason
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = _github()
    with FakeCodeHost(app) as host:

        def source(**kw) -> GitHubSource:
            return GitHubSource(
                "Acme", base_url=host.url, token_env=TOKEN_ENV, sleep=FakeSleep(), **kw
            )

        verdict, _ = run_source(store, source(**wide))
        everything = len(store.projects())
        assert verdict.complete and everything > 0
        for _ in range(2):
            verdict, cleanup = run_source(store, source(**narrow))
            assert verdict.complete, verdict.reason
            assert verdict.coverage["filters"] == ListingFilter.of(**narrow).as_coverage()
            assert 0 < verdict.seen < everything
            assert cleanup.removed == 0 and len(store.projects()) == everything
            kept = store.cleanup_entries(cleanup.run_id)
            assert len(kept) == everything - verdict.seen
            assert all(reason in (e.reason or "") for e in kept), kept[0].reason
        verdict, cleanup = run_source(store, source(**wide))
        assert verdict.seen == everything and cleanup.removed == 0


def test_a_filtered_repository_that_is_really_gone_is_removed_once_the_filter_widens(
    store, monkeypatch
):
    """The filter keeps a row while it hides it; once widened, a real deletion is cleaned up."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = _github(8)
    with FakeCodeHost(app) as host:

        def source(**kw) -> GitHubSource:
            return GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, **kw)

        run_source(store, source())
        lib = next(r for r in app.owners["acme"].repos if r["name"].startswith("lib-"))
        app.delete("Acme", lib["id"])
        _, cleanup = run_source(store, source(include=["svc-*"]))
        assert cleanup.removed == 0 and len(store.projects()) == 8
        _, cleanup = run_source(store, source())
        assert cleanup.removed == 1 and len(store.projects()) == 7


def test_gitlab_subgroups_left_out_are_kept_and_come_back(store, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = GitLabApp(token=TOKEN)
    app.add_group("platform", 5)
    app.add_group("platform/legacy", 4)
    app.add_group("platform/legacy/deep", 3)
    app.add_group("platform/web", 2)
    with FakeCodeHost(app) as host:

        def source(**kw) -> GitLabSource:
            return GitLabSource("platform", base_url=host.url, token_env=TOKEN_ENV, **kw)

        verdict, _ = run_source(store, source())
        assert verdict.complete and verdict.seen == 14
        for _ in range(2):
            verdict, cleanup = run_source(store, source(exclude_subgroups=["legacy"]))
            assert verdict.complete, verdict.reason
            assert verdict.seen == 7 and cleanup.removed == 0
            assert len(store.projects()) == 14
            kept = store.cleanup_entries(cleanup.run_id)
            assert {e.location.split("/")[1] for e in kept} == {"legacy"}
            assert all("exclude_subgroups" in (e.reason or "") for e in kept)
        verdict, cleanup = run_source(store, source())
        assert verdict.seen == 14 and cleanup.removed == 0


def test_gitea_name_filter_keeps_what_it_hides(store, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = GiteaApp(token=TOKEN)
    app.add_owner("infra", 12)
    with FakeCodeHost(app) as host:

        def source(**kw) -> GiteaSource:
            return GiteaSource("infra", base_url=host.url, token_env=TOKEN_ENV, **kw)

        run_source(store, source())
        verdict, cleanup = run_source(store, source(exclude=["*-000[0-4]"]))
        assert verdict.complete and verdict.seen == 7
        assert cleanup.removed == 0 and len(store.projects()) == 12


def test_a_listing_with_filters_still_checks_its_count(monkeypatch):
    """Filters act after the count check: a listing cut short is incomplete, filters or not."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = _github(250)
    app.cut_after(1)
    with FakeCodeHost(app) as host:
        source = GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, include=["svc-*"])
        _, (verdict,) = scan(source)
    assert not verdict.complete


@pytest.mark.parametrize("key", ["include", "exclude", "topics"])
def test_an_empty_filter_value_names_the_key_and_the_file(key):
    data = {"sources": [{"kind": "github", "owner": "acme", key: ["ok", " "]}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "enum.yaml")
    assert f"sources.0.github.{key}" in str(err.value) and "enum.yaml" in str(err.value)


def test_configured_filters_reach_the_source():
    data = {
        "sources": [
            {"kind": "gitlab", "group": "g", "include": ["a*"], "exclude_subgroups": ["old"]},
            {"kind": "github", "owner": "o", "topics": ["python"], "token_env": None},
        ]
    }
    gitlab, github = parse_config(data, "enum.yaml").build_sources()
    assert gitlab.listing_filter == ListingFilter.of(include=["a*"]).with_subgroups(["old"])
    assert github.listing_filter.topics == ("python",)
