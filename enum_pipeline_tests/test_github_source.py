"""GitHubSource against a loopback fake of the GitHub REST API."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.github import GitHubSource, github_web_host
from enum_pipeline.sources.http import HttpClient, PageError, parse_link_header
from enum_pipeline.sources.kinds import FILLED_COLUMNS
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
    # whom the token belongs to, then the owner's counts, read before and after the pages
    assert [r.path for r in app.requests] == ["/user", "/orgs/Acme"] + [r.path for r in pages] + [
        "/orgs/Acme"
    ]
    assert verdict.identity["owner_id"] == app.owners["acme"].id
    assert verdict.coverage["visibilities"] == ["internal", "private", "public"]

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
        # bob's token lists alice's public repositories only, and the coverage says so
        assert verdict.identity["principal"] == "bob"
        assert verdict.coverage["visibilities"] == ["public"]

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
    # the own account's counts (private ones included) come from /user, before and after
    assert [r.path for r in app.requests if r.page is None] == ["/user", "/user", "/user"]
    assert verdict.identity["principal"] == "Alice"
    assert verdict.coverage["visibilities"] == ["private", "public"]


def test_user_scope_is_incomplete_when_the_token_owner_cannot_be_read(token_env):
    """With a token, not knowing whose it is would risk listing public repositories only and
    cleaning up the private ones: the scope is incomplete instead."""
    app = GitHubApp(token=TOKEN, token_owner=None)  # GET /user answers 403, as for an App
    app.add_owner("alice", 5, kind="user")
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, "alice", owner_type="user"))
    assert records == [] and not verdict.complete
    assert "/user failed" in verdict.reason and "403" in verdict.reason


def test_invalid_owner_type():
    with pytest.raises(ValueError):
        GitHubSource("x", owner_type="team")


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


def test_filters(github):
    app, host = github
    records, [verdict] = scan(make(host, include_archived=False, include_forks=False))
    assert verdict.complete
    assert len(records) == 200 and verdict.seen == 200
    assert not any(r.archived or r.fork for r in records)
    # the 50 filtered out were listed (the counts check holds), and the coverage names the filters
    assert verdict.coverage["include_forks"] is False
    assert verdict.coverage["include_archived"] is False


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


def test_private_repository_counted_but_not_listed_makes_the_scope_incomplete(github):
    """Private repositories count: a listing short of the owner's private count is not whole."""
    app, host = github
    app.owners["acme"].unlisted_private = 1
    records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    private = sum(1 for r in app.owners["acme"].repos if r["private"])
    assert f"the listing holds {private} private repositories, org 'Acme' has {private + 1}" in (
        verdict.reason
    )


def test_token_that_cannot_see_private_counts_covers_public_repositories_only(github):
    """A token that is not a member sees no private count: whatever it lists, its coverage is
    public only, so a private repository it does not list is kept, not removed."""
    app, host = github
    app.private_counts = False
    records, [verdict] = scan(make(host))
    assert verdict.complete and len(records) == 250
    assert verdict.coverage["visibilities"] == ["public"]
