"""GitLabSource against a loopback fake of the GitLab REST API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.gitlab import GitLabSource
from enum_pipeline.sources.kinds import FILLED_COLUMNS
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, GitLabApp, scan

TOKEN_ENV = "ENUM_TEST_GL_TOKEN"
TOKEN = "test-only-gl-token-NOT-REAL-0002"


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def make(host: FakeCodeHost, group: str = "grp", **kw) -> GitLabSource:
    kw.setdefault("sleep", FakeSleep())
    kw.setdefault("token_env", TOKEN_ENV)
    return GitLabSource(group, base_url=kw.pop("base_url", host.url), **kw)


@pytest.fixture
def gitlab(token_env):
    app = GitLabApp(token=TOKEN)
    app.add_group("grp", 250)
    with FakeCodeHost(app) as host:
        yield app, host


def test_full_listing_keyset(gitlab):
    app, host = gitlab
    source = make(host)
    assert source.scope_keys() == [f"gitlab:{host.host}/grp"]
    records, [verdict] = scan(source)
    assert verdict.complete and verdict.seen == 250 and len(records) == 250
    # whom the token belongs to, the group's id, three keyset pages, then the count to check
    paths = [r.path.split("?")[0] for r in app.requests]
    group_id = app.groups["grp"].id  # the keyset links name the group by id, as GitLab does
    assert paths == ["/api/v4/user", "/api/v4/groups/grp", "/api/v4/groups/grp/projects"] + [
        f"/api/v4/groups/{group_id}/projects"
    ] * 2 + ["/api/v4/groups/grp/projects"]
    assert len(app.listing_requests()) == 4
    count = app.requests[-1]
    assert count.query["per_page"] == "1" and "pagination" not in count.query
    assert verdict.identity["owner_id"] == app.groups["grp"].id
    assert verdict.coverage["include_subgroups"] is True
    first = app.requests[2]
    assert first.path.startswith("/api/v4/groups/grp/projects")
    assert first.query["pagination"] == "keyset" and first.query["order_by"] == "id"
    assert first.query["per_page"] == "100" and first.query["include_subgroups"] == "true"
    assert "id_after" in app.requests[3].query
    assert all(r.headers.get("private-token") == TOKEN for r in app.requests)

    project = app.projects[0]
    rec = records[0]
    assert rec.project_key == f"gitlab:{host.host}:{project['id']}"
    assert rec.scope_key == f"gitlab:{host.host}/grp" and rec.source_kind == "gitlab"
    assert rec.location == "grp/proj-0000" and rec.name == "Proj 0000"
    assert rec.remote_url == "https://gitlab.example.com/grp/proj-0000.git"
    assert rec.normalized_remote == "gitlab.example.com/grp/proj-0000"
    assert rec.default_branch == "main" and rec.vcs == "git"
    attrs = rec.attributes
    assert attrs["path_with_namespace"] == "grp/proj-0000"
    assert attrs["namespace_full_path"] == "grp" and rec.visibility == "internal"
    assert rec.last_activity_at == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    assert rec.stars == project["star_count"] and rec.topics == ("x",)
    assert not {"archived", "visibility", "topics", "star_count", "last_activity_at"} & set(attrs)


def test_product_columns(token_env):
    """Every column FILLED_COLUMNS promises for GitLab, from the project list."""
    app = GitLabApp(token=TOKEN)
    app.add_group("grp", 0)
    app.add_project(
        "grp",
        "lib",
        archived=True,
        visibility="private",
        description="a library",
        topics=["infra"],
        star_count=7,
        forked_from_project={"id": 1, "path_with_namespace": "up/lib"},
    )
    app.add_project("grp", "plain", topics=[], description="")
    with FakeCodeHost(app) as host:
        (lib, plain), [verdict] = scan(make(host, "grp"))
    assert verdict.complete
    assert lib.archived is True and lib.fork is True and lib.visibility == "private"
    assert lib.description == "a library" and lib.topics == ("infra",) and lib.stars == 7
    project = app.projects[0]
    assert lib.created_at == datetime.fromisoformat(project["created_at"]).astimezone(UTC)
    assert lib.last_activity_at == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    assert lib.language is None and lib.license is None  # GitLab's list has neither
    assert plain.fork is False and plain.archived is False and plain.description is None
    filled = FILLED_COLUMNS["gitlab"]
    for column in PRODUCT_COLUMNS:
        assert (getattr(lib, column) is not None) == (column in filled), column


def test_subgroups(token_env):
    app = GitLabApp()
    app.add_group("Grp", 120)
    app.add_group("Grp/sub", 30)
    app.add_group("Grp/sub/deeper", 5)
    app.add_group("other", 10)
    with FakeCodeHost(app) as host:
        source = make(host, "Grp/sub")
        assert source.scope_keys() == [f"gitlab:{host.host}/grp/sub"]
        records, [verdict] = scan(source)
        assert verdict.complete and len(records) == 35
        assert app.listing_requests()[0].path.startswith("/api/v4/groups/Grp%2Fsub/projects")
        assert {r.location for r in records} >= {"Grp/sub/proj-0000", "Grp/sub/deeper/proj-0004"}

        records, [verdict] = scan(make(host, "Grp"))
        assert verdict.complete and len(records) == 155
        assert "Grp/sub/deeper/proj-0000" in {r.location for r in records}

        records, [verdict] = scan(make(host, "Grp", include_subgroups=False))
        assert verdict.complete and len(records) == 120
        assert app.requests[-1].query["include_subgroups"] == "false"
        assert verdict.coverage["include_subgroups"] is False


@pytest.mark.parametrize("offset_links", [True, False])
def test_offset_pagination_fallback(token_env, offset_links):
    app = GitLabApp(keyset=False, offset_links=offset_links)
    app.add_group("grp", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert verdict.complete and len(records) == 250
    # offset pages carry x-total: no count request is needed
    listing = app.listing_requests()
    assert [r.query.get("page", "1") for r in listing] == ["1", "2", "3"]
    assert all("id_after" not in r.query for r in listing)


def test_offset_count_changed_during_listing_is_incomplete(token_env):
    class Shrinking(GitLabApp):
        def route(self, req, host):
            reply = super().route(req, host)
            if reply.page == 1 and reply.status == 200:
                self.projects.pop(3)  # deleted while we read: page 2 shifts by one
            return reply

    app = Shrinking(keyset=False)
    app.add_group("grp", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 249
    assert not verdict.complete and "changed during the listing" in verdict.reason


def test_offset_total_mismatch_is_incomplete(token_env):
    class Lying(GitLabApp):
        def route(self, req, host):
            reply = super().route(req, host)
            if "x-total" in reply.headers:
                reply.headers["x-total"] = "260"
            return reply

    app = Lying(keyset=False)
    app.add_group("grp", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    assert "x-total=260" in verdict.reason and "250 were read" in verdict.reason


def test_429_ratelimit_reset_is_honoured(gitlab):
    app, host = gitlab
    app.rate_limit_page(2, status=429, reset_in=30, reset_header="RateLimit-Reset")
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and len(records) == 250
    assert len(sleep.calls) == 1 and 28 <= sleep.calls[0] <= 33


def test_429_retry_after_is_honoured(gitlab):
    app, host = gitlab
    app.rate_limit_page(3, status=429, retry_after=12, reset_in=500, reset_header="RateLimit-Reset")
    sleep = FakeSleep()
    records, [verdict] = scan(make(host, sleep=sleep))
    assert verdict.complete and sleep.calls == [pytest.approx(12.0)]


def test_exclude_archived(token_env):
    app = GitLabApp()
    app.add_group("grp", 10)
    app.add_project("grp", "old", archived=True)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
        assert verdict.complete and len(records) == 11
        records, [verdict] = scan(make(host, include_archived=False))
    assert verdict.complete and len(records) == 10
    assert app.requests[-1].query["archived"] == "false"
    assert verdict.coverage["include_archived"] is False


def test_keyset_listing_checked_against_a_per_page_1_count(token_env):
    """Keyset pages carry no x-total: the count comes from one per_page=1 request, and a
    listing that disagrees with it is incomplete."""

    class Lying(GitLabApp):
        def route(self, req, host):
            reply = super().route(req, host)
            if req.query.get("per_page") == "1":
                reply.headers["x-total"] = "251"
            return reply

    app = Lying()
    app.add_group("grp", 250)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 250 and not verdict.complete
    assert "x-total=251" in verdict.reason and "250 were read" in verdict.reason


def test_no_x_total_anywhere_is_incomplete(token_env):
    """gitlab.com omits x-total past 10,000 projects: with nothing to check the listing
    against, its end is known only from the last page, and the scope is incomplete."""
    app = GitLabApp(send_total=False)
    app.add_group("grp", 150)
    with FakeCodeHost(app) as host:
        records, [verdict] = scan(make(host))
    assert len(records) == 150 and not verdict.complete
    assert "no x-total" in verdict.reason
