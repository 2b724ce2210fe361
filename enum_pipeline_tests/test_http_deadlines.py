"""Every code-host request has a wall-clock deadline, and a secondary rate limit is waited out
(issue 19, part 4), against the loopback fake of GitHub (a real HTTP server)."""

from __future__ import annotations

import json
import time

import pytest

from enum_pipeline.sources.github import GitHubSource
from enum_pipeline.sources.http import HttpClient, PageError
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GitHubApp, scan

TOKEN_ENV = "ENUM_TEST_GH_TOKEN"
TOKEN = "test-only-gh-token-NOT-REAL-0002"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def github(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = GitHubApp(token=TOKEN)
    app.add_owner("Acme", 150)
    with FakeCodeHost(app) as host:
        yield app, host


def _source(host: FakeCodeHost, sleep: FakeSleep, **kw) -> GitHubSource:
    return GitHubSource("Acme", base_url=host.url, token_env=TOKEN_ENV, sleep=sleep, **kw)


@pytest.mark.parametrize("headers", [False, True], ids=["body", "status-line"])
def test_a_host_that_trickles_forever_leaves_the_scope_incomplete_within_the_deadline(
    github, headers
):
    """httpx's read timeout restarts on every byte: only the request deadline ends these."""
    app, host = github
    app.trickle_page(2, interval=0.05, headers=headers)  # every request for page 2, forever
    sleep = FakeSleep()
    started = time.monotonic()
    records, [verdict] = scan(_source(host, sleep, request_deadline_seconds=1, max_retries=2))
    elapsed = time.monotonic() - started
    assert not verdict.complete
    assert "no answer within the request deadline (1s)" in verdict.reason
    assert "gave up after 3 attempts" in verdict.reason
    assert len(records) == 100  # page 1 was read
    assert [r.query.get("page", "1") for r in app.listing_requests()] == ["1", "2", "2", "2"]
    assert len(sleep.calls) == 2
    assert elapsed < 30  # 3 attempts of 1 s each; generous for a loaded machine


def test_an_oversize_body_is_not_read(github):
    _, host = github
    client = HttpClient(max_body_bytes=1000, sleep=FakeSleep())
    try:
        with pytest.raises(PageError, match="larger than max_body_bytes=1000"):
            client.get_json(f"{host.url}/orgs/Acme/repos", headers={"Authorization": TOKEN})
    finally:
        client.close()


@pytest.mark.parametrize(
    "message",
    [
        "You have triggered an abuse detection mechanism. Please wait a few minutes before you "
        "try again.",
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    ],
)
def test_a_secondary_rate_limit_without_retry_after_is_waited_out(github, message):
    """GitHub's 403 with quota left and no Retry-After is a rate limit, not a refused token."""
    app, host = github
    app.fail_page(
        2,
        status=403,
        times=2,
        body=json.dumps({"message": message}).encode(),
        headers={"x-ratelimit-remaining": "4987", "x-ratelimit-limit": "5000"},
    )
    sleep = FakeSleep()
    records, [verdict] = scan(_source(host, sleep))
    assert verdict.complete, verdict.reason
    assert len(records) == 150
    assert app.statuses().count(403) == 2
    assert len(sleep.calls) == 2 and all(s >= 60 for s in sleep.calls)


def test_a_secondary_rate_limit_that_never_lifts_ends_within_the_wait_budget(github):
    app, host = github
    body = json.dumps({"message": "You have triggered an abuse detection mechanism."}).encode()
    app.fail_page(1, status=403, times=None, body=body)
    sleep = FakeSleep()
    records, [verdict] = scan(_source(host, sleep, max_wait_seconds=150))
    assert not verdict.complete and records == []
    assert "rate limited (HTTP 403)" in verdict.reason
    assert "exceeds the remaining wait budget" in verdict.reason
    assert "authentication" not in verdict.reason
    assert sum(sleep.calls) <= 150
