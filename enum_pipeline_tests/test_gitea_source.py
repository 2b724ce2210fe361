"""GiteaSource against a loopback fake of the Gitea/Forgejo REST API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.gitea import GiteaSource
from enum_pipeline.sources.kinds import FILLED_COLUMNS
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GiteaApp, scan

TOKEN_ENV = "ENUM_TEST_GITEA_TOKEN"
TOKEN = "test-only-gitea-token-NOT-REAL-0003"


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def make(host: FakeCodeHost, owner: str = "Org", **kw) -> GiteaSource:
    kw.setdefault("sleep", FakeSleep())
    kw.setdefault("token_env", TOKEN_ENV)
    return GiteaSource(owner, kw.pop("base_url", host.url), **kw)


@pytest.fixture
def gitea(token_env):
    app = GiteaApp(token=TOKEN)
    app.add_owner("Org", 250)
    with FakeCodeHost(app) as host:
        yield app, host


def pages_requested(app) -> list[str]:
    return [r.query.get("page") for r in app.listing_requests()]


def test_full_listing(gitea):
    app, host = gitea
    source = make(host)
    assert source.scope_keys() == [f"gitea:{host.host}/org"]
    records, [verdict] = scan(source)
    assert verdict.complete and verdict.seen == 250 and len(records) == 250
    assert pages_requested(app) == ["1", "2", "3", "4", "5"]
    assert all(r.query["limit"] == "50" for r in app.listing_requests())
    assert all(r.path.startswith("/api/v1/orgs/Org/repos") for r in app.listing_requests())
    assert [r.path for r in app.requests[:2]] == ["/api/v1/user", "/api/v1/orgs/Org"]
    assert verdict.identity["owner_id"] == app.owners["org"].id

    repo = app.owners["org"].repos[0]
    rec = records[0]
    assert rec.project_key == f"gitea:{host.host}:{repo['id']}"
    assert rec.source_kind == "gitea" and rec.vcs == "git"
    assert rec.name == "repo-0000" and rec.location == "Org/repo-0000"
    assert rec.normalized_remote == "gitea.example.com/Org/repo-0000"
    assert rec.visibility == "public" and rec.attributes["full_name"] == rec.location


def test_product_columns(token_env):
    """Every column FILLED_COLUMNS promises for Gitea, from the repository object."""
    app = GiteaApp(token=TOKEN)
    app.add_owner("Org", 0)
    app.add_repo(
        "Org",
        "lib",
        archived=True,
        fork=True,
        internal=True,
        description="a library",
        topics=["infra"],
        licenses=["MIT"],
        stars_count=3,
    )
    app.add_repo("Org", "plain", description="", licenses=[])
    with FakeCodeHost(app) as host:
        (lib, plain), [verdict] = scan(make(host))
    assert verdict.complete
    assert lib.archived is True and lib.fork is True and lib.visibility == "internal"
    assert lib.description == "a library" and lib.topics == ("infra",) and lib.license == "MIT"
    assert lib.stars == 3 and lib.language == "Go" and lib.default_branch == "main"
    assert lib.created_at == datetime(2023, 12, 31, 23, tzinfo=UTC)
    assert lib.last_activity_at == datetime(2024, 1, 1, 23, tzinfo=UTC)  # updated_at
    assert plain.license is None and plain.description is None and plain.visibility == "public"
    filled = FILLED_COLUMNS["gitea"]
    for column in PRODUCT_COLUMNS:
        assert (getattr(lib, column) is not None) == (column in filled), column


def test_server_clamps_limit(token_env):
    """The client asks limit=50, the server serves 30 a page: every repository is still read."""
    app = GiteaApp(max_items=30)
    app.add_owner("Org", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert verdict.complete and len(records) == 250
    assert all(r.query["limit"] == "50" for r in app.listing_requests())
    assert pages_requested(app) == [str(n) for n in range(1, 10)]  # 9 * 30 >= 250


def test_without_link_or_total_reads_until_empty_page_but_is_incomplete(token_env):
    """Every repository is read, but with no X-Total-Count the end is known only from an empty
    page: nothing to check the listing against, so the scope is incomplete."""
    app = GiteaApp(max_items=30, send_link=False, send_total=False)
    app.add_owner("Org", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    assert "no X-Total-Count" in verdict.reason
    assert pages_requested(app) == [str(n) for n in range(1, 11)]  # the 10th is empty


def test_clamped_without_link_stops_at_total(token_env):
    app = GiteaApp(max_items=30, send_link=False)
    app.add_owner("Org", 240)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert verdict.complete and len(records) == 240 and len(app.listing_requests()) == 8


def test_link_from_another_root_url_is_only_a_hint(token_env):
    app = GiteaApp(root_url="https://gitea.invalid")
    app.add_owner("Org", 120)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert verdict.complete and len(records) == 120 and len(app.listing_requests()) == 3


def test_users_vs_orgs(token_env):
    app = GiteaApp()
    app.add_owner("bob", 4, kind="user")
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host, "bob", owner_type="user"))
        assert verdict.complete and len(records) == 4
        assert app.listing_requests()[0].path.startswith("/api/v1/users/bob/repos")
        records, [verdict] = scan(make(host, "bob"))
    assert records == [] and not verdict.complete
    assert "org 'bob' not found" in verdict.reason and "/api/v1/orgs/bob " in verdict.reason


def test_empty_org_is_complete(token_env):
    app = GiteaApp()
    app.add_owner("Org", 0)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert records == [] and verdict.complete and verdict.seen == 0


def test_total_mismatch_is_incomplete(token_env):
    class Lying(GiteaApp):
        def route(self, req, host):
            reply = super().route(req, host)
            reply.headers["X-Total-Count"] = "251"
            reply.headers.pop("Link", None)
            return reply

    app = Lying()
    app.add_owner("Org", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    assert "X-Total-Count=251" in verdict.reason


def test_count_changed_during_listing_is_incomplete(token_env):
    class Shrinking(GiteaApp):
        def route(self, req, host):
            reply = super().route(req, host)
            if reply.page == 1 and reply.status == 200:
                self.owners["org"].repos.pop(0)
            return reply

    app = Shrinking()
    app.add_owner("Org", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert not verdict.complete and "changed during the listing" in verdict.reason


def test_server_ignoring_page_parameter_is_incomplete(token_env):
    class Stuck(GiteaApp):
        def route(self, req, host):
            req.query["page"] = "1"
            return super().route(req, host)

    app = Stuck(send_link=False, send_total=False)
    app.add_owner("Org", 120)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 50 and not verdict.complete
    assert "page parameter" in verdict.reason
