"""The request budget of a code-host read: requests, pages, retries, seconds waited for limits,
the quota left at the end, in the verdict and the run's metadata; and a read that would leave
less than ``reserve_requests`` of the token's quota stops before it (its scope incomplete, so
nothing of it is removed)."""

from __future__ import annotations

from dagster import TableMetadataValue

from enum_pipeline.defs.tables import budget_metadata
from enum_pipeline.scan import stage_sources
from enum_pipeline.sources.github import GitHubSource
from enum_pipeline.sources.gitlab import GitLabSource
from enum_pipeline_tests.fake_codehosts import (
    FakeCodeHost,
    FakeSleep,
    GitHubApp,
    GitLabApp,
    RecordedRequest,
    Reply,
    scan,
)
from enum_pipeline_tests.helpers import GONE, new_run_id

TOKEN_ENV = "ENUM_TEST_BUDGET_TOKEN"
TOKEN = "test-only-budget-token-NOT-REAL-0044"


class MeteredGitHub(GitHubApp):
    """Counts the token's quota down on every request, as GitHub does."""

    def __init__(self, quota: int, **kw) -> None:
        super().__init__(token=TOKEN, **kw)
        self.quota = quota

    def handle(self, req: RecordedRequest, host: str) -> Reply:
        reply = super().handle(req, host)
        with self.lock:
            self.quota = max(0, self.quota - 1)
            reply.headers.update(
                {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(self.quota)}
            )
        return reply


def test_a_listing_reports_what_it_cost(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = MeteredGitHub(quota=4000)
    app.add_owner("Acme", 250)
    app.fail_page(2, status=502)
    app.rate_limit_page(3, reset_in=30)
    sleep = FakeSleep()
    with FakeCodeHost(app) as host:
        source = GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, sleep=sleep)
        _, (verdict,) = scan(source)
    assert verdict.complete, verdict.reason
    budget = verdict.budget
    assert budget["requests"] == len(app.requests)
    assert budget["pages"] == 3
    assert budget["retries"] == 2 and budget["rate_limited"] == 1
    assert budget["limit_wait_seconds"] >= 29
    waited = budget["limit_wait_seconds"] + budget["backoff_seconds"]
    assert abs(waited - sum(sleep.calls)) < 0.002
    assert budget["quota_limit"] == 5000
    assert budget["quota_remaining"] == app.quota


def test_a_read_stops_before_the_reserve_and_its_scope_is_incomplete(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = MeteredGitHub(quota=6)
    app.add_owner("Acme", 1000)  # 10 pages: the quota runs out long before
    with FakeCodeHost(app) as host:
        source = GitHubSource(
            "Acme", base_url=host.url, token_env=TOKEN_ENV, reserve_requests=3, sleep=FakeSleep()
        )
        records, (verdict,) = scan(source)
    assert not verdict.complete
    assert "reserve_requests keeps 3 for other tools" in verdict.reason
    assert app.quota == 3  # never spent below the reserve
    assert verdict.budget["quota_remaining"] == 3 and 0 < len(records) < 1000


def test_gitlab_ratelimit_headers_are_read_too(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    class Metered(GitLabApp):
        def handle(self, req: RecordedRequest, host: str) -> Reply:
            reply = super().handle(req, host)
            reply.headers.update({"ratelimit-limit": "2000", "ratelimit-remaining": "1500"})
            return reply

    app = Metered(token=TOKEN)
    app.add_group("grp", 120)
    with FakeCodeHost(app) as host:
        source = GitLabSource("grp", base_url=host.url, token_env=TOKEN_ENV)
        _, (verdict,) = scan(source)
    assert verdict.complete
    assert verdict.budget["quota_remaining"] == 1500 and verdict.budget["quota_limit"] == 2000
    assert verdict.budget["requests"] == len(app.requests)


def test_the_budget_reaches_the_run_metadata_and_an_exhausted_scope_loses_nothing(
    store, monkeypatch
):
    """Two runs through the store: the second stops at the reserve; nothing is removed, and
    the scanned_projects metadata carries the budget table and the plotted totals."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = MeteredGitHub(quota=5000)
    app.add_owner("Acme", 300)
    with FakeCodeHost(app) as host:

        def run():
            source = GitHubSource(
                "Acme", base_url=host.url, token_env=TOKEN_ENV, reserve_requests=100
            )
            run_id = new_run_id()
            summary = stage_sources(store, run_id, store.begin(run_id), [source])
            store.flush(run_id)
            store.verify_and_confirm(run_id)
            store.complete(run_id)
            return summary, store.safe_cleanup_old_projects(run_id, witness=GONE)

        summary, _ = run()
        assert summary.verdicts[0].complete and store.count_projects() == 300
        app.quota = 102  # another tool spent the rest
        summary, cleanup = run()
        assert not summary.verdicts[0].complete and cleanup.removed == 0
        assert store.count_projects() == 300
    metadata = budget_metadata(summary.as_dict()["scopes"])
    table = metadata["request_budget"]
    assert isinstance(table, TableMetadataValue)
    (row,) = table.records
    assert row.data["scope"] == summary.verdicts[0].scope_key
    assert row.data["quota_remaining"] == 100
    assert metadata["requests"] == row.data["requests"] > 0
    assert metadata["quota_remaining_min"] == 100
