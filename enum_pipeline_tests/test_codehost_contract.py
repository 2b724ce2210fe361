"""What every code-host source promises, run against the loopback fake of each host.

The three sources share one listing skeleton (``sources/codehost.py``); this suite holds them to
one contract: retries and rate limits, truncated JSON, a rejected or missing token, a token never
in records or logs, a listing cut short, identity and coverage. Each host's own quirks stay in
``test_<host>_source.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from enum_pipeline_tests.fake_codehosts import HOSTS as FAKE_HOSTS
from enum_pipeline_tests.fake_codehosts import (
    FakeCodeHost,
    FakeSleep,
    HostContract,
    Reply,
    scan,
)

TOKEN_ENV = "ENUM_TEST_CODEHOST_TOKEN"
TOKEN = "test-only-codehost-token-NOT-REAL-0009"
CLONE_SECRET = "hunter2-not-real"
N = 250


@dataclass(frozen=True)
class Host:
    """A host's contract (declared by its fake, ``fake_<host>.py``), run with this suite's
    token variable."""

    contract: HostContract

    def __getattr__(self, name: str) -> Any:
        return getattr(self.contract, name)

    def make(self, host: FakeCodeHost, owner: str | None = None, **kw) -> Any:
        kw.setdefault("token_env", TOKEN_ENV)
        return self.contract.make(host, owner, **kw)


HOSTS = [Host(contract) for contract in FAKE_HOSTS]


@pytest.fixture(params=HOSTS, ids=[h.name for h in HOSTS])
def kind(request) -> Host:
    return request.param


@pytest.fixture
def token(monkeypatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@pytest.fixture
def served(kind: Host, token: str):
    app = kind.new_app(token=TOKEN, clone_credentials=f"deploy:{CLONE_SECRET}")
    items = kind.populate(app, N)
    with FakeCodeHost(app) as host:
        yield app, host, items


def test_full_listing_with_identity_and_coverage(kind: Host, served) -> None:
    app, host, items = served
    assert any(kind.is_private(i) for i in items)
    records, [verdict] = scan(kind.make(host))
    assert verdict.complete and verdict.reason is None
    assert verdict.seen == len(records) == N  # private ones included
    assert {r.attributes["id"] for r in records} == {kind.item_id(i) for i in items}
    assert verdict.identity == {
        "host": host.host,
        "owner": kind.owner,
        "owner_id": kind.owner_id(app),
        "principal": "token-bot",
    }
    assert "private" in verdict.coverage["visibilities"]
    assert verdict.coverage["include_forks"] is True
    assert verdict.coverage["include_archived"] is True
    assert {kind.sent_token(r.headers) for r in app.requests} == {TOKEN}


def test_anonymous_read_sees_public_repositories_only_and_says_so(kind: Host) -> None:
    app = kind.new_app()
    items = kind.populate(app, 30)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(kind.make(host, token_env=None))
    public = {kind.item_id(i) for i in items if not kind.is_private(i)}
    assert 0 < len(public) < 30
    assert verdict.complete and {r.attributes["id"] for r in records} == public
    assert verdict.identity["principal"] == "anonymous"
    assert verdict.coverage["visibilities"] == ["public"]
    assert all(kind.sent_token(r.headers) is None for r in app.requests)


@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_configured_token_missing_makes_the_scope_incomplete(
    kind: Host, served, monkeypatch, value
) -> None:
    app, host, _ = served
    if value is None:
        monkeypatch.delenv(TOKEN_ENV)
    else:
        monkeypatch.setenv(TOKEN_ENV, value)
    records, [verdict] = scan(kind.make(host))
    assert records == [] and not verdict.complete and verdict.seen == 0
    assert f"environment variable {TOKEN_ENV} (token_env) is not set or empty" in verdict.reason
    assert app.requests == []  # no public-only listing passes for a read of the owner


def test_rejected_token_makes_the_scope_incomplete(kind: Host, served, monkeypatch) -> None:
    app, host, _ = served
    monkeypatch.setenv(TOKEN_ENV, "test-only-wrong-token")
    records, [verdict] = scan(kind.make(host))
    assert records == [] and not verdict.complete
    assert f"the token in environment variable {TOKEN_ENV} was rejected (HTTP 401" in (
        verdict.reason
    )
    assert "test-only-wrong-token" not in verdict.reason


def test_token_that_cannot_say_whose_it_is_makes_the_scope_incomplete(kind: Host, token) -> None:
    app = kind.new_app(token=TOKEN, token_owner=None)
    kind.populate(app, 5)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(kind.make(host))
    assert records == [] and not verdict.complete
    assert "403" in verdict.reason and "/user" in verdict.reason


def test_token_never_in_records_verdict_or_logs(kind: Host, served, caplog) -> None:
    app, host, _ = served
    app.fail_page(2, status=502, times=None)
    with caplog.at_level(logging.DEBUG):
        records, [verdict] = scan(kind.make(host, max_retries=1))
    assert len(records) == kind.page_size and not verdict.complete
    text = repr(records) + repr(verdict) + caplog.text
    assert TOKEN not in text and CLONE_SECRET not in text
    assert all(r.remote_url.startswith("https://***@") for r in records)


def test_transient_5xx_is_retried_with_growing_waits(kind: Host, served) -> None:
    app, host, _ = served
    app.fail_page(2, status=502, times=2)
    app.fail_page(3, status=503, times=1)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep))
    assert verdict.complete and len(records) == N
    assert len(sleep.calls) == 3
    assert sleep.calls[1] > sleep.calls[0] * 0.9  # exponential (with jitter)
    assert app.statuses().count(502) == 2


def test_5xx_forever_keeps_what_was_read_and_is_incomplete(kind: Host, served) -> None:
    app, host, _ = served
    app.fail_page(2, status=502, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep, max_retries=3))
    assert len(records) == verdict.seen == kind.page_size  # page 1 is real and fresh
    assert not verdict.complete
    assert "502" in verdict.reason and "gave up after 4 attempts" in verdict.reason
    assert kind.page_2 in verdict.reason
    assert len(sleep.calls) == 3


def test_429_retry_after_is_honoured(kind: Host, served) -> None:
    app, host, _ = served
    app.rate_limit_page(2, status=429, retry_after=7)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep))
    assert verdict.complete and len(records) == N
    assert sleep.calls == [pytest.approx(7.0)]


def test_403_rate_limit_with_reset_is_waited_out(kind: Host, served) -> None:
    app, host, _ = served
    app.rate_limit_page(3, status=403, reset_in=42)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep))
    assert verdict.complete and len(records) == N
    assert len(sleep.calls) == 1 and 40 <= sleep.calls[0] <= 45


def test_rate_limit_beyond_the_wait_budget_fails_the_page(kind: Host, served) -> None:
    app, host, _ = served
    app.rate_limit_page(2, status=429, retry_after=1000, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep, max_wait_seconds=300))
    assert len(records) == kind.page_size and not verdict.complete
    assert "rate limited" in verdict.reason and "wait budget" in verdict.reason
    assert sleep.calls == []


def test_total_wait_is_capped_across_retries(kind: Host, served) -> None:
    app, host, _ = served
    app.rate_limit_page(2, status=429, retry_after=100, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep, max_wait_seconds=250, max_retries=10))
    assert not verdict.complete and len(records) == kind.page_size
    assert sum(sleep.calls) <= 250 and len(sleep.calls) == 2


def test_truncated_json_is_retried_then_incomplete(kind: Host, served) -> None:
    app, host, _ = served
    app.truncate_page(2, times=1)
    sleep = FakeSleep()
    records, [verdict] = scan(kind.make(host, sleep=sleep))
    assert verdict.complete and len(records) == N and len(sleep.calls) == 1

    app.truncate_page(3, times=None)
    records, [verdict] = scan(kind.make(host, max_retries=1))
    assert len(records) == 2 * kind.page_size and not verdict.complete
    assert "invalid or truncated JSON" in verdict.reason


def test_slow_answer_times_out_and_is_retried(kind: Host, served, caplog) -> None:
    app, host, _ = served
    app.slow_page(2, delay=3.0, times=1)
    sleep = FakeSleep()
    with httpx.Client(timeout=0.6) as client, caplog.at_level(logging.WARNING):
        records, [verdict] = scan(kind.make(host, sleep=sleep, client=client))
    assert verdict.complete and len(records) == N
    # A loaded machine may time out another page too; each retry must be a timeout, and the
    # slow page's among them.
    timeouts = [r.getMessage() for r in caplog.records if "timeout" in r.getMessage()]
    assert len(sleep.calls) == len(timeouts) >= 1
    assert any(kind.page_2 in message for message in timeouts)


def test_listing_cut_short_is_incomplete(kind: Host, served) -> None:
    """The host stops paging after page 1 while its count still says 250: the end of a
    listing is never taken from a missing next page alone."""
    app, host, _ = served
    app.cut_after(1)
    records, [verdict] = scan(kind.make(host))
    assert len(records) == kind.page_size
    assert not verdict.complete
    # checked against the host's own count: GitHub's owner counts, x-total, X-Total-Count
    assert "the listing holds" in verdict.reason or f"={N} " in verdict.reason


def test_malformed_records_make_the_scope_incomplete(kind: Host, served) -> None:
    app, host, _ = served
    route = app.route

    def with_a_broken_item(req, host_header) -> Reply:
        reply = route(req, host_header)
        if reply.page == 1 and reply.status == 200:
            data = json.loads(reply.body)
            broken = [*kind.items_of(data), {"id": None}, "not an object"]
            reply.body = json.dumps(kind.with_items(data, broken)).encode()
        return reply

    app.route = with_a_broken_item  # type: ignore[method-assign]
    records, [verdict] = scan(kind.make(host))
    assert len(records) == N and not verdict.complete
    assert "2 " in verdict.reason and "without an id" in verdict.reason


def test_an_item_repeated_on_a_later_page_is_yielded_once(kind: Host, served) -> None:
    app, host, _ = served
    route = app.route
    first: list = []

    def repeating(req, host_header) -> Reply:
        reply = route(req, host_header)
        if reply.status == 200 and reply.page in (1, 2):
            data = json.loads(reply.body)
            if reply.page == 1:
                first[:] = kind.items_of(data)[:1]
            else:
                repeated = first + kind.items_of(data)
                reply.body = json.dumps(kind.with_items(data, repeated)).encode()
        return reply

    app.route = repeating  # type: ignore[method-assign]
    records, [verdict] = scan(kind.make(host))
    assert verdict.complete and len(records) == verdict.seen == N
    assert len({r.project_key for r in records}) == N


def test_unknown_owner_is_incomplete_with_reason(kind: Host, served) -> None:
    app, host, _ = served
    records, [verdict] = scan(kind.make(host, "nobody"))
    assert records == [] and not verdict.complete and verdict.seen == 0
    assert "'nobody' not found" in verdict.reason and "404" in verdict.reason


def test_rename_keeps_project_key(kind: Host, served) -> None:
    app, host, items = served
    before, _ = scan(kind.make(host))
    kind.rename(app, items[17], "renamed-one")
    after, [verdict] = scan(kind.make(host))
    assert verdict.complete
    assert {r.project_key for r in before} == {r.project_key for r in after}
    renamed = next(r for r in after if r.attributes["id"] == kind.item_id(items[17]))
    assert renamed.name == "renamed-one" and renamed.location.endswith("/renamed-one")


@pytest.mark.parametrize("value", ["ghp_not-a-name-0123", "MY TOKEN", "1ABC", "a-b"])
def test_token_env_that_is_not_a_variable_name_is_refused_unechoed(kind: Host, value) -> None:
    with pytest.raises(ValueError) as err:
        kind.new_source(kind.owner, base_url="https://h.invalid", token_env=value)
    assert value not in str(err.value) and "token_env" in str(err.value)
