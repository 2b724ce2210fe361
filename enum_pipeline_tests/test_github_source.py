"""GitHubSource against a loopback fake of the GitHub REST API."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import pytest

from enum_pipeline.sources.fields import FILLED_COLUMNS, PRODUCT_COLUMNS
from enum_pipeline.sources.github import GitHubSource, github_web_host
from enum_pipeline.sources.http import HttpClient, PageError, parse_link_header
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GitHubApp, Reply, scan

TOKEN_ENV = "ENUM_TEST_GH_TOKEN"
TOKEN = "test-only-gh-token-NOT-REAL-0001"


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@pytest.fixture
def github(token_env):
    app = GitHubApp(token=TOKEN)
    app.add_owner("Acme", 250)
    with FakeCodeHost(app) as host:
        yield app, host


def make(host: FakeCodeHost, owner: str = "Acme", **kw) -> GitHubSource:
    kw.setdefault("sleep", FakeSleep())
    kw.setdefault("token_env", TOKEN_ENV)
    return GitHubSource(owner, base_url=kw.pop("base_url", host.url), **kw)


def test_full_listing_across_pages(github):
    app, host = github
    source = make(host)
    assert source.scope_keys() == [f"github:{host.host}/acme"]
    records, [verdict] = scan(source)
    assert len(records) == 250
    assert verdict.complete and verdict.seen == 250 and verdict.reason is None
    assert verdict.scope_key == f"github:{host.host}/acme"
    assert len({r.project_key for r in records}) == 250
    # per_page=100, Link followed (github.com answers with /organizations/{id}/repos links)
    pages = app.listing_requests()
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]
    assert all(r.query["per_page"] == "100" for r in pages)
    assert pages[0].path.startswith("/orgs/Acme/repos")
    assert pages[1].path.startswith("/organizations/")
    # the owner's counts, read before and after the pages
    assert [r.path for r in app.requests] == ["/orgs/Acme"] + [r.path for r in pages] + [
        "/orgs/Acme"
    ]

    repo = app.owners["acme"].repos[0]
    first = records[0]
    assert first.project_key == f"github:{host.host}:{repo['id']}"
    assert first.source_kind == "github" and first.vcs == "git"
    assert first.name == "Repo-0000" and first.location == "Acme/Repo-0000"
    assert first.remote_url == "https://github.com/Acme/Repo-0000.git"
    assert first.normalized_remote == "github.com/Acme/Repo-0000"
    assert first.default_branch == "main"
    assert first.last_commit_at == datetime.fromisoformat(repo["pushed_at"]).astimezone(UTC)
    assert first.last_commit_at.tzinfo is not None
    attrs = first.attributes
    assert attrs["id"] == repo["id"] and attrs["full_name"] == "Acme/Repo-0000"
    for key in ("html_url", "ssh_url", "size", "pushed_at", "updated_at", "forks_count"):
        assert key in attrs
    # what has a column of its own is not repeated in the attributes
    assert not {"archived", "fork", "visibility", "topics", "language", "description"} & set(attrs)


def test_product_columns(token_env):
    """Every column FILLED_COLUMNS promises for GitHub, from the API's repository object."""
    app = GitHubApp()
    app.add_owner("Acme", 0)
    app.add_repo(
        "Acme",
        "lib",
        archived=True,
        fork=True,
        visibility="internal",
        license={"key": "apache-2.0", "spdx_id": "Apache-2.0", "name": "Apache License 2.0"},
        stargazers_count=42,
        topics=["infra", "python"],
        language="Rust",
        description="a library",
    )
    app.add_repo("Acme", "bare", license=None, description=None, language=None, topics=[])
    with FakeCodeHost(app) as host:
        (lib, bare), [verdict] = scan(make(host))
    repo = app.owners["acme"].repos[0]
    assert verdict.complete
    assert lib.archived is True and lib.fork is True and lib.visibility == "internal"
    assert lib.license == "Apache-2.0" and lib.stars == 42
    assert lib.topics == ("infra", "python") and lib.language == "Rust"
    assert lib.description == "a library" and lib.default_branch == "main"
    assert lib.created_at == datetime.fromisoformat(repo["created_at"]).astimezone(UTC)
    assert lib.last_activity_at == datetime.fromisoformat(repo["pushed_at"]).astimezone(UTC)
    assert lib.current_branch is None and lib.remotes is None and lib.in_sync is None
    assert bare.license is None and bare.description is None and bare.language is None
    assert bare.topics == () and bare.archived is False and bare.fork is False
    filled = FILLED_COLUMNS["github"]
    for column in PRODUCT_COLUMNS:
        assert (getattr(lib, column) is not None) == (column in filled), column


def test_page_shorter_than_per_page_is_not_the_end(token_env):
    """A server answering fewer items than asked is followed to its last Link."""
    app = GitHubApp()
    app.add_owner("Acme", 95)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 95 and verdict.complete


def test_enterprise_base_url(token_env):
    app = GitHubApp(prefix="/api/v3", web_host="ghe.example.com", token=TOKEN)
    app.add_owner("Team", 120)
    with FakeCodeHost(app) as host:
        source = make(host, "Team", base_url=host.url + "/api/v3/")
        records, [verdict] = scan(source)
    assert verdict.complete and len(records) == 120
    assert all(r.path.startswith("/api/v3/") for r in app.requests)
    assert records[0].normalized_remote == "ghe.example.com/Team/Repo-0000"
    assert records[0].project_key.startswith(f"github:{host.host}:")


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("https://api.github.com", "github.com"),
        ("https://ghe.example.com/api/v3", "ghe.example.com"),
        ("https://API.acme.ghe.com", "acme.ghe.com"),
        ("http://127.0.0.1:8080/api/v3", "127.0.0.1:8080"),
    ],
)
def test_web_host(base_url, host):
    assert github_web_host(base_url) == host
    owner_key = GitHubSource("Org", base_url=base_url).scope_keys()[0]
    assert owner_key == f"github:{host}/org"


def test_users_vs_orgs(token_env):
    """A user listed with someone else's token (or none): ``/users/{user}/repos``, which GitHub
    answers with public repositories only; an org of that name does not exist."""
    app = GitHubApp(token=TOKEN, token_owner="bob")
    alice = app.add_owner("alice", 7, kind="user")
    app.add_owner("bob", 1, kind="user")
    public = sorted(r["id"] for r in alice if not r["private"])
    assert 0 < len(public) < 7
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, "alice", owner_type="user"))
        assert verdict.complete and sorted(r.attributes["id"] for r in records) == public
        assert app.listing_requests()[0].path.startswith("/users/alice/repos")
        assert app.listing_requests()[0].query["type"] == "owner"
        assert verdict.fingerprint["listing"] == "/users/alice/repos"

        records, [verdict] = scan(make(host, "alice", owner_type="org"))
    assert not verdict.complete and records == []
    assert "not found" in verdict.reason and "/orgs/alice failed" in verdict.reason
    assert "404" in verdict.reason


def test_user_listed_with_their_own_token_includes_private_repositories(token_env):
    app = GitHubApp(token=TOKEN, token_owner="Alice")
    alice = app.add_owner("Alice", 150, kind="user")
    assert any(r["private"] for r in alice)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, "alice", owner_type="user"))
    assert verdict.complete and len(records) == 150
    assert {r.attributes["id"] for r in records} == {r["id"] for r in alice}
    pages = app.listing_requests()
    assert [r.path.split("?")[0] for r in pages] == ["/user/repos", "/user/repos"]
    assert pages[0].query["affiliation"] == "owner" and pages[0].query["visibility"] == "all"
    assert verdict.fingerprint["listing"] == "/user/repos"
    assert set(verdict.fingerprint["owner_counts"]) >= {"public_repos", "total_private_repos"}


def test_user_scope_is_incomplete_when_the_token_owner_cannot_be_read(token_env):
    """With a token, not knowing whose it is would risk listing public repositories only and
    cleaning up the private ones: the scope is incomplete instead."""
    app = GitHubApp(token=TOKEN)  # no token owner: GET /user answers 401
    app.add_owner("alice", 5, kind="user")
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, "alice", owner_type="user"))
    assert records == [] and not verdict.complete
    assert "/user failed" in verdict.reason and "401" in verdict.reason


def test_unknown_org_is_incomplete_with_reason(github):
    app, host = github
    records, [verdict] = scan(make(host, "nobody"))
    assert records == [] and not verdict.complete and verdict.seen == 0
    assert "org 'nobody' not found" in verdict.reason
    assert "/orgs/nobody failed" in verdict.reason


def test_invalid_owner_type():
    with pytest.raises(ValueError):
        GitHubSource("x", owner_type="team")


def test_transient_502_is_retried(github):
    app, host = github
    app.fail_page(2, status=502, times=2)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250
    assert len(sleep.calls) == 2
    assert sleep.calls[1] > sleep.calls[0] * 0.9  # exponential (with jitter)
    assert app.statuses().count(502) == 2


def test_502_forever_on_page_2_yields_page_1_and_incomplete(github):
    app, host = github
    app.fail_page(2, status=502, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep, max_retries=3))
    assert len(records) == 100  # page 1 is real and fresh
    assert not verdict.complete
    assert verdict.seen == 100
    assert "502" in verdict.reason and "page=2" in verdict.reason
    assert "gave up after 4 attempts" in verdict.reason
    assert len(sleep.calls) == 3


def test_429_retry_after_is_honoured(github):
    app, host = github
    app.rate_limit_page(2, status=429, retry_after=7)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250
    assert sleep.calls == [pytest.approx(7.0)]


def test_primary_rate_limit_reset_is_honoured(github):
    app, host = github
    app.rate_limit_page(3, status=403, reset_in=42)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250
    assert len(sleep.calls) == 1 and 40 <= sleep.calls[0] <= 45


def test_secondary_rate_limit_403(github):
    app, host = github
    app.rate_limit_page(
        2, status=403, message="You have exceeded a secondary rate limit. Please wait."
    )
    app.rate_limit_page(3, status=403, retry_after=5, message="secondary rate limit")
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250
    assert sleep.calls == [pytest.approx(60.0), pytest.approx(5.0)]


def test_rate_limit_wait_beyond_cap_fails_the_page(github):
    app, host = github
    app.rate_limit_page(2, status=429, retry_after=1000, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep, max_wait_seconds=300))
    assert len(records) == 100 and not verdict.complete
    assert "rate limited" in verdict.reason and "wait budget" in verdict.reason
    assert sleep.calls == []


def test_total_wait_is_capped_across_retries(github):
    app, host = github
    app.rate_limit_page(2, status=429, retry_after=100, times=None)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep, max_wait_seconds=250, max_retries=10))
    assert not verdict.complete and len(records) == 100
    assert sum(sleep.calls) <= 250 and len(sleep.calls) == 2


def test_truncated_json_is_retried(github):
    app, host = github
    app.truncate_page(2, times=1)
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250 and len(sleep.calls) == 1


def test_truncated_json_forever_is_incomplete(github):
    app, host = github
    app.truncate_page(3, times=None)
    records, [verdict] = scan(make(host, max_retries=2))
    assert len(records) == 200 and not verdict.complete
    assert "invalid or truncated JSON" in verdict.reason and "page=3" in verdict.reason


def test_slow_answer_times_out_and_is_retried(github, caplog):
    app, host = github
    app.slow_page(2, delay=1.0, times=1)
    sleep = FakeSleep()
    with httpx.Client(timeout=0.2) as client, caplog.at_level(logging.WARNING):
        records, [verdict] = scan(make(host, sleep=sleep, client=client))
    assert verdict.complete and len(records) == 250
    assert len(sleep.calls) == 1
    assert "timeout" in caplog.text


def test_etag_304_served_from_cache(token_env):
    app = GitHubApp(etags=True)
    app.add_owner("Acme", 250)
    with FakeCodeHost(app) as host:
        source = make(host)
        first, [v1] = scan(source)
        second, [v2] = scan(source)
    assert v1.complete and v2.complete
    assert first == second
    assert app.listing_statuses() == [200, 200, 200, 304, 304, 304]
    assert all("if-none-match" in r.headers for r in app.listing_requests()[3:])


def test_rename_keeps_project_key(github):
    app, host = github
    source = make(host)
    before, _ = scan(source)
    repo = app.owners["acme"].repos[17]
    app.rename("Acme", repo["id"], "Renamed-Repo")
    after, [verdict] = scan(source)
    assert verdict.complete
    assert {r.project_key for r in before} == {r.project_key for r in after}
    renamed = next(r for r in after if r.project_key.endswith(f":{repo['id']}"))
    assert renamed.name == "Renamed-Repo" and renamed.location == "Acme/Renamed-Repo"


def test_filters(github):
    app, host = github
    records, [verdict] = scan(make(host, include_archived=False, include_forks=False))
    assert verdict.complete
    assert len(records) == 200 and verdict.seen == 200
    assert not any(r.archived or r.fork for r in records)
    assert verdict.fingerprint["listed"] == 250 and verdict.fingerprint["filtered_out"] == 50


def test_token_sent_and_never_leaked(token_env, caplog):
    app = GitHubApp(token=TOKEN, clone_credentials="deploy:hunter2-not-real")
    app.add_owner("Acme", 150)
    app.fail_page(2, status=502, times=None)
    with FakeCodeHost(app) as host, caplog.at_level(logging.DEBUG):
        records, [verdict] = scan(make(host, max_retries=1))
    assert len(records) == 100 and not verdict.complete
    assert {r.headers.get("authorization") for r in app.requests} == {f"Bearer {TOKEN}"}
    text = repr(records) + repr(verdict) + caplog.text
    assert TOKEN not in text
    assert "hunter2" not in text
    assert records[0].remote_url == "https://***@github.com/Acme/Repo-0000.git"


def test_missing_token_env_is_unauthenticated_with_warning(monkeypatch, caplog):
    monkeypatch.delenv("ENUM_TEST_GH_MISSING", raising=False)
    app = GitHubApp()
    app.add_owner("Acme", 3)
    with FakeCodeHost(app) as host, caplog.at_level(logging.WARNING):
        records, [verdict] = scan(make(host, token_env="ENUM_TEST_GH_MISSING"))
    assert verdict.complete and len(records) == 3
    assert "authorization" not in app.requests[0].headers
    assert "ENUM_TEST_GH_MISSING" in caplog.text


def test_bad_credentials_is_incomplete(monkeypatch, token_env):
    monkeypatch.setenv("ENUM_TEST_GH_OTHER", "test-only-wrong-token")
    app = GitHubApp(token=TOKEN)
    app.add_owner("Acme", 3)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, token_env="ENUM_TEST_GH_OTHER"))
    assert records == [] and not verdict.complete
    assert "401" in verdict.reason and "authentication" in verdict.reason


def test_next_link_to_another_origin_is_not_followed(token_env):
    class Elsewhere(GitHubApp):
        def route(self, req, host):
            reply = super().route(req, host)
            if "Link" in reply.headers:
                reply.headers["Link"] = reply.headers["Link"].replace(host, "evil.invalid")
            return reply

    app = Elsewhere(token=TOKEN)
    app.add_owner("Acme", 150)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 100 and not verdict.complete
    assert "another origin" in verdict.reason
    assert len(app.listing_requests()) == 1


def test_same_origin_redirect_followed_cross_origin_refused():
    """The HTTP layer follows a redirect only within the origin (credentials stay home)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(301, headers={"Location": "/new"})
        if request.url.path == "/new":
            return httpx.Response(200, json=[1, 2])
        return httpx.Response(302, headers={"Location": "https://elsewhere.invalid/x"})

    http = HttpClient(client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert http.get_json("https://h.invalid/old", expect=list).data == [1, 2]
    with pytest.raises(PageError, match="another origin"):
        http.get_json("https://h.invalid/away", headers={"Authorization": "Bearer x"})


def test_parse_link_header():
    value = (
        '<https://api.github.com/organizations/1/repos?page=2>; rel="next", '
        '<https://api.github.com/organizations/1/repos?page=5>; rel="last"'
    )
    assert parse_link_header(value) == {
        "next": "https://api.github.com/organizations/1/repos?page=2",
        "last": "https://api.github.com/organizations/1/repos?page=5",
    }
    assert parse_link_header("</p?x=1>; rel=next", base="http://h/a") == {"next": "http://h/p?x=1"}
    assert parse_link_header(None) == {}


def test_repository_deleted_mid_listing_makes_the_scope_incomplete(github):
    """GitHub pages by offset: deleting a repository on page 1 while page 2 is fetched shifts
    the first repository of page 2 onto page 1, already read, so it is never seen. The owner's
    counts, read before and after, moved: the scope must not count as complete (a complete scope
    would let the cleanup remove the repository that was skipped)."""
    app, host = github
    repos = app.owners["acme"].repos
    deleted, skipped = repos[10], repos[100]
    app.after_page(1, lambda: app.delete("Acme", deleted["id"]))
    records, [verdict] = scan(make(host))
    ids = {r.attributes["id"] for r in records}
    assert skipped["id"] not in ids and len(records) == 249  # the shift really happened
    assert not verdict.complete
    assert "changed while they were listed" in verdict.reason
    field = "total_private_repos" if deleted["private"] else "public_repos"
    assert field in verdict.reason
    assert verdict.seen == 249  # what was read is still staged: fresh and real

    records, [verdict] = scan(make(host))  # the next run reads a still list
    assert (
        verdict.complete
        and len(records) == 249
        and skipped["id"] in {r.attributes["id"] for r in records}
    )


def test_listing_shorter_than_the_public_count_is_incomplete(github):
    app, host = github
    app.owners["acme"].unlisted_public = 1
    records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    public = sum(1 for r in app.owners["acme"].repos if not r["private"])
    assert f"the listing holds {public} public repositories, org 'Acme' has {public + 1}" in (
        verdict.reason
    )


def test_owner_counts_page_failing_makes_the_scope_incomplete(github):
    class CountsDown(GitHubApp):
        def route(self, req, host):
            if req.path == "/orgs/Acme" and self.listing_requests():
                return Reply.json(502, {"message": "injected 502"})
            return super().route(req, host)

    app = CountsDown(token=TOKEN)
    app.add_owner("Acme", 150)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, max_retries=1))
    assert len(records) == 150 and not verdict.complete
    assert "/orgs/Acme failed" in verdict.reason and "502" in verdict.reason
