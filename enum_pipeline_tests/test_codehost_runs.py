"""Code-host listings in real runs through the store (both backends): what a read could not
see is never removed."""

from __future__ import annotations

import pytest

from enum_pipeline.sources.github import GitHubSource
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GitHubApp
from enum_pipeline_tests.helpers import run_source

TOKEN_ENV = "ENUM_TEST_RUNS_TOKEN"
TOKEN = "test-only-runs-token-NOT-REAL-0010"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_owner_whose_token_disappears_keeps_its_private_repositories(
    store, monkeypatch, value
) -> None:
    app = GitHubApp(token=TOKEN)
    repos = app.add_owner("Acme", 60)
    private = {r["id"] for r in repos if r["private"]}
    assert private
    with FakeCodeHost(app) as host:

        def source() -> GitHubSource:
            return GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, sleep=FakeSleep())

        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        verdict, _ = run_source(store, source())
        assert verdict.complete and verdict.seen == 60
        assert {r["project_key"] for r in store.projects()} == {
            f"github:{host.host}:{r['id']}" for r in repos
        }

        for _ in range(2):  # two runs in a row without the token
            if value is None:
                monkeypatch.delenv(TOKEN_ENV, raising=False)
            else:
                monkeypatch.setenv(TOKEN_ENV, value)
            verdict, cleanup = run_source(store, source())
            assert not verdict.complete and TOKEN_ENV in verdict.reason
            assert cleanup.removed == 0
            assert len(store.projects()) == 60  # the private ones too


def test_listing_narrowed_to_no_forks_or_archived_keeps_them(store, monkeypatch):
    """The same owner, same token, read again without forks and archived repositories: those
    are out of the listing's coverage, kept and listed as such, two runs in a row."""
    app = GitHubApp(token=TOKEN)
    repos = app.add_owner("Acme", 60)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with FakeCodeHost(app) as host:

        def source(**kw) -> GitHubSource:
            return GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, **kw)

        verdict, _ = run_source(store, source())
        assert verdict.complete and verdict.seen == 60
        unseen = {f"github:{host.host}:{r['id']}" for r in repos if r["fork"] or r["archived"]}
        assert unseen
        for _ in range(2):
            verdict, cleanup = run_source(
                store, source(include_forks=False, include_archived=False)
            )
            assert verdict.complete and verdict.seen == 60 - len(unseen)
            assert cleanup.removed == 0 and len(store.projects()) == 60
            kept = {e.project_key: e for e in store.cleanup_entries(cleanup.run_id)}
            assert set(kept) == unseen
            for entry in kept.values():
                assert entry.action == "keep" and entry.reason.startswith("out of coverage: ")
