"""Bitbucket Cloud's own quirks (the shared contract runs in test_codehost_contract.py): pages
that are objects (``values``, ``size``, ``next``), repositories keyed by ``uuid``, a project
narrowing the scope, forks known by ``parent``, and the configuration."""

from __future__ import annotations

import pytest

from enum_pipeline.config import ConfigError, parse_config
from enum_pipeline.scan import stage_sources
from enum_pipeline.sources.bitbucket import BitbucketSource
from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.kinds import FILLED_COLUMNS
from enum_pipeline.sources.witness import SourceWitness
from enum_pipeline_tests.fake_bitbucket import BitbucketApp
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, scan
from enum_pipeline_tests.helpers import new_run_id

TOKEN_ENV = "ENUM_TEST_BITBUCKET_TOKEN"
TOKEN = "test-only-bitbucket-token-NOT-REAL-0005"


@pytest.fixture
def app(monkeypatch) -> BitbucketApp:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    fake = BitbucketApp(token=TOKEN)
    fake.add_workspace("team", 120)
    return fake


def _source(host, **kw) -> BitbucketSource:
    kw.setdefault("token_env", TOKEN_ENV)
    return BitbucketSource("team", base_url=f"{host.url}/2.0", sleep=FakeSleep(), **kw)


def test_every_promised_column_is_filled_and_no_other(app):
    with FakeCodeHost(app) as host:
        records, (verdict,) = scan(_source(host))
    assert verdict.complete and len(records) == 120
    record = records[0]
    repo = app.workspaces["team"]["repos"][0]
    assert record.project_key == f"bitbucket:{host.host}:{repo['uuid'].strip('{}')}"
    assert record.location == "team/repo-0000" and record.name == "repo-0000"
    assert record.default_branch == "main" and record.visibility == "private"
    assert record.remote_url == f"https://{app.web_host}/team/repo-0000.git"
    filled = FILLED_COLUMNS["bitbucket"]
    for column in PRODUCT_COLUMNS:
        value = getattr(record, column)
        if column in filled:
            assert value is not None, column
        else:
            assert value is None, column


def test_a_project_is_its_own_scope_and_lists_only_its_repositories(app):
    with FakeCodeHost(app) as host:
        records, (verdict,) = scan(_source(host, project="OPS"))
    ops = [r for r in app.workspaces["team"]["repos"] if r["project"]["key"] == "OPS"]
    assert verdict.complete and len(records) == len(ops) < 120
    assert verdict.scope_key == f"bitbucket:{host.host}/team/ops"
    assert verdict.coverage["project"] == "OPS"
    assert all(r.attributes["project_key"] == "OPS" for r in records)
    assert all('project.key="OPS"' in r.query.get("q", "") for r in app.listing_requests())


def test_forks_are_known_by_their_parent_and_can_be_left_out(app):
    repos = app.workspaces["team"]["repos"]
    for repo in repos[:7]:
        repo["parent"] = {"full_name": "upstream/x", "type": "repository"}
    with FakeCodeHost(app) as host:
        records, _ = scan(_source(host))
        forks = [r for r in records if r.fork]
        assert len(forks) == 7 and forks[0].attributes["forked_from"] == "upstream/x"
        records, (verdict,) = scan(_source(host, include_forks=False))
    assert verdict.complete and len(records) == 113
    assert verdict.coverage["include_forks"] is False


def test_the_public_api_host_names_the_web_host():
    source = BitbucketSource("team", token_env=None)
    assert source.host == "bitbucket.org"
    assert source.scope_key == "bitbucket:bitbucket.org/team"


def test_a_deleted_repository_is_removed_once_confirmed_by_uuid(store, app):
    with FakeCodeHost(app) as host:

        def run():
            run_id = new_run_id()
            stage_sources(store, run_id, store.begin(run_id), [_source(host)])
            store.flush(run_id)
            store.verify_and_confirm(run_id)
            assert store.complete(run_id) == "completed"
            return store.safe_cleanup_old_projects(run_id, witness=SourceWitness([_source(host)]))

        run()
        victim = app.workspaces["team"]["repos"][40]
        app.delete(victim)
        result = run()
    assert result.removed == 1 and store.count_projects() == 119
    (entry,) = [e for e in result.entries if e.action == "remove"]
    assert "not found: GET" in entry.confirmation


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"kind": "bitbucket"}, "sources.0.bitbucket.workspace"),
        ({"kind": "bitbucket", "workspace": "t", "project": ""}, "project must be a project key"),
        ({"kind": "bitbucket", "workspace": "t", "token_env": "x y"}, "token_env"),
    ],
)
def test_bad_bitbucket_settings_name_the_key_and_the_file(entry, named):
    with pytest.raises(ConfigError) as err:
        parse_config({"sources": [entry]}, "enum.yaml").build_sources()
    assert named in str(err.value) and "enum.yaml" in str(err.value)
