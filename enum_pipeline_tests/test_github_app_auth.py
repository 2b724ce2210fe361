"""GitHub App authentication against a loopback GitHub that checks the JWT's signature, issuer
and lifetime, mints installation tokens that expire, and lists an installation's repositories
(all of the account's, or the selected ones). Through the store on both backends: a repository
an installation was not granted is kept, never removed."""

from __future__ import annotations

import pytest

from enum_pipeline.config import ConfigError, parse_config
from enum_pipeline.sources.github import GitHubSource
from enum_pipeline.sources.githubapp import RENEW_MARGIN_SECONDS
from enum_pipeline.sources.witness import SourceWitness
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep, scan
from enum_pipeline_tests.fake_github_app import GitHubWithApp, new_key_pair
from enum_pipeline_tests.helpers import GONE, run_source

APP_ID = 31337
KEY_ENV = "ENUM_TEST_APP_KEY"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return new_key_pair()


@pytest.fixture
def app(keys) -> GitHubWithApp:
    fake = GitHubWithApp(app_id=APP_ID, public_key=keys[1], account="Acme")
    fake.add_owner("Acme", 250)
    fake.add_owner("Other", 5)
    return fake


def _source(host, monkeypatch, key: str, **kw) -> GitHubSource:
    monkeypatch.setenv(KEY_ENV, key)
    return GitHubSource(
        "Acme", base_url=host.url, app_id=APP_ID, private_key_env=KEY_ENV, sleep=FakeSleep(), **kw
    )


def test_app_reads_the_whole_org_with_a_signed_jwt_and_an_installation_token(
    app, keys, monkeypatch
):
    with FakeCodeHost(app) as host:
        records, verdicts = scan(_source(host, monkeypatch, keys[0]))
    (verdict,) = verdicts
    assert verdict.complete, verdict.reason
    assert len(records) == verdict.seen == 250
    assert verdict.identity["principal"] == f"app:{APP_ID}/installation:{app.installation_id}"
    assert verdict.identity["repository_selection"] == "all"
    assert verdict.coverage["repository_selection"] == "all"
    assert not app.jwt_errors
    posts = [r for r in app.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].path.endswith("/access_tokens")
    pages = [r for r in app.requests if r.path.startswith("/installation/repositories")]
    assert len(pages) == 3  # 100 + 100 + 50, each with the installation token
    assert all(r.headers["authorization"].startswith("Bearer ghs_") for r in pages)


def test_a_key_that_is_not_the_apps_is_one_sentence_naming_it(app, monkeypatch):
    other_private, _ = new_key_pair()
    with FakeCodeHost(app) as host:
        _, (verdict,) = scan(_source(host, monkeypatch, other_private))
    assert not verdict.complete
    assert f"private key is not the key of app_id {APP_ID}" in verdict.reason
    assert app.jwt_errors and "could not be decoded" in app.jwt_errors[0]
    assert "BEGIN" not in verdict.reason


def test_a_wrong_installation_id_is_one_sentence_naming_it(app, keys, monkeypatch):
    with FakeCodeHost(app) as host:
        _, (verdict,) = scan(_source(host, monkeypatch, keys[0], installation_id=999))
    assert not verdict.complete
    assert f"installation_id 999 is not an installation of app_id {APP_ID}" in verdict.reason


def test_an_app_not_installed_on_the_owner_says_so(keys, monkeypatch):
    fake = GitHubWithApp(app_id=APP_ID, public_key=keys[1], account="Elsewhere")
    fake.add_owner("Acme", 3)
    fake.add_owner("Elsewhere", 3)
    with FakeCodeHost(fake) as host:
        _, (verdict,) = scan(_source(host, monkeypatch, keys[0]))
    assert not verdict.complete
    assert f"app_id {APP_ID} is not installed on org 'Acme'" in verdict.reason


def test_the_installation_token_is_renewed_before_it_expires(keys, monkeypatch):
    """Tokens minted with less than the renewal margin left: every request renews first, so
    each page goes out with a new token, never one about to expire."""
    fake = GitHubWithApp(
        app_id=APP_ID, public_key=keys[1], account="Acme", token_seconds=RENEW_MARGIN_SECONDS - 5
    )
    fake.add_owner("Acme", 250)
    with FakeCodeHost(fake) as host:
        source = _source(host, monkeypatch, keys[0])
        records, (verdict,) = scan(source)
    assert verdict.complete, verdict.reason
    assert len(records) == 250
    posts = [r for r in fake.requests if r.method == "POST"]
    pages = [r for r in fake.requests if r.path.startswith("/installation/repositories")]
    assert len(posts) >= len(pages) == 3  # a fresh token for every page
    assert all(r.status == 200 for r in pages)
    tokens = [r.headers["authorization"] for r in pages]
    assert len(set(tokens)) == len(tokens)


def test_a_selected_installation_is_marked_and_its_missing_rows_are_out_of_coverage(
    app, keys, monkeypatch
):
    repos = app.owners["acme"].repos
    app.grant({r["id"] for r in repos[:40]})
    with FakeCodeHost(app) as host:
        records, (verdict,) = scan(_source(host, monkeypatch, keys[0]))
    assert verdict.complete, verdict.reason
    assert len(records) == 40
    assert verdict.coverage["repository_selection"] == "selected"
    assert verdict.identity["repository_selection"] == "selected"


@pytest.mark.parametrize("witness", ["source", "confirms-everything"])
def test_narrowing_a_selected_installation_loses_nothing(store, app, keys, monkeypatch, witness):
    """Granted 120, then 50 of them: the 70 no longer granted are kept, out of coverage, run
    after run, even with a witness that would confirm anything gone; widening again sees all."""
    repos = app.owners["acme"].repos
    app.grant({r["id"] for r in repos[:120]})
    with FakeCodeHost(app) as host:

        def source() -> GitHubSource:
            return _source(host, monkeypatch, keys[0])

        def confirm():
            return SourceWitness([source()]) if witness == "source" else GONE

        verdict, _ = run_source(store, source(), confirm())
        assert verdict.complete and verdict.seen == 120
        assert len(store.projects()) == 120
        app.grant({r["id"] for r in repos[:50]})
        for _ in range(2):
            verdict, cleanup = run_source(store, source(), confirm())
            assert verdict.complete and verdict.seen == 50
            assert cleanup.removed == 0
            assert len(store.projects()) == 120
            entries = store.cleanup_entries(cleanup.run_id)
            assert len(entries) == 70
            assert all("selected repositories only" in (e.reason or "") for e in entries)
        app.grant(None)
        verdict, cleanup = run_source(store, source(), confirm())
        assert verdict.complete and verdict.seen == 250
        assert cleanup.removed == 0 and len(store.projects()) == 250


def test_the_witness_refuses_to_confirm_for_a_selected_installation(app, keys, monkeypatch):
    """A not-found answer from a selected installation may be a repository not granted."""
    repos = app.owners["acme"].repos
    with FakeCodeHost(app) as host:
        _, (verdict,) = scan(_source(host, monkeypatch, keys[0]))
        app.grant({r["id"] for r in repos[:10]})
        from enum_pipeline.sources.witness import Absence, Candidate

        candidate = Candidate(
            project_key=f"github:{host.host}:{repos[20]['id']}",
            scope_key=verdict.scope_key,
            source_kind="github",
            name=repos[20]["name"],
            location=repos[20]["full_name"],
            attributes={"id": repos[20]["id"]},
            identity=verdict.identity,
        )
        (answer,) = list(_source(host, monkeypatch, keys[0]).confirm_absence([candidate]))
    assert answer.answer is Absence.UNKNOWN
    assert "selected repositories" in answer.evidence


CONFIG = "ENUM_TEST_APP_CONFIG"


def _github(**kw) -> dict:
    return {"sources": [{"kind": "github", "owner": "acme", **kw}]}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"app_id": 1}, "exactly one of private_key_env and private_key_file"),
        ({"private_key_env": "K"}, "private_key_env is set but app_id is not"),
        ({"app_id": 1, "private_key_env": "K", "token_env": "T"}, "token_env and app_id"),
        ({"app_id": 1, "private_key_env": "-----BEGIN"}, "private_key_env must name"),
        ({"app_id": 0, "private_key_env": "K"}, "app_id"),
    ],
)
def test_app_settings_that_cannot_work_name_the_key_and_the_file(extra, named):
    with pytest.raises(ConfigError) as err:
        parse_config(_github(**extra), "enum.yaml")
    assert named in str(err.value) and "enum.yaml" in str(err.value)


def test_an_unreadable_or_malformed_key_names_the_setting_and_the_file(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pem"
    config = parse_config(_github(app_id=5, private_key_file=str(missing)), "enum.yaml")
    with pytest.raises(ConfigError) as err:
        config.build_sources()
    assert f"private_key_file {missing}" in str(err.value) and "enum.yaml" in str(err.value)
    monkeypatch.setenv(KEY_ENV, "not a key at all")
    config = parse_config(_github(app_id=5, private_key_env=KEY_ENV), "enum.yaml")
    with pytest.raises(ConfigError) as err:
        config.build_sources()
    assert f"{KEY_ENV} (private_key_env) holds no PEM private key" in str(err.value)
    assert "not a key at all" not in str(err.value)
