"""Secrets never reach output, logs, Dagster's storage or the inventory database.

Each form (a password in a database URL's query, remote-helper and ``git+ssh`` URLs with a
password, a token pasted into ``token_env``, a token in the environment, credentials in the clone
URLs a code host answers with) is planted in a real CLI run against real repositories and the
loopback fake of GitHub, and then searched for in the CLI's output, the inventory database and
every file under ``DAGSTER_HOME``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from enum_pipeline.config import ConfigError, load_config_file, parse_config
from enum_pipeline.store.engine import redact_database_url
from enum_pipeline_tests.conftest import make_repo
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, GitHubApp
from enum_pipeline_tests.test_cli import cli  # noqa: F401 - the CLI fixture

DB_PASSWORD = "S3CR3T-dbpass-0001"
HG_HELPER_PASSWORD = "S3CR3T-hghelper-0002"
GIT_SSH_PASSWORD = "S3CR3T-gitssh-0003"
HGRC_PASSWORD = "S3CR3T-hgrc-0004"
# Fake tokens with the hosts' prefixes, put together at run time so that nothing in the tree
# looks like a real token.
PASTED_TOKEN = "ghp" + "_S3CR3Tpastedtoken0005abcdef"
ENV_TOKEN = "S3CR3T-envtoken-0006"
CLONE_PASSWORD = "S3CR3T-clone-0007"
TOKEN_ENV = "ENUM_TEST_SECRETS_TOKEN"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://app@db.example/inv?password={DB_PASSWORD}&sslmode=require",
            "postgresql://app@db.example/inv?password=***&sslmode=require",
        ),
        (
            f"postgresql+psycopg://app:{DB_PASSWORD}@db.example/inv?sslpassword={DB_PASSWORD}",
            "postgresql+psycopg://app:***@db.example/inv?sslpassword=***",
        ),
        ("sqlite:////var/lib/inv.sqlite", "sqlite:////var/lib/inv.sqlite"),
        (f"not a url {DB_PASSWORD}", "<unparsable database URL>"),
    ],
)
def test_database_url_shown_without_any_password(url: str, shown: str) -> None:
    assert redact_database_url(url) == shown
    assert DB_PASSWORD not in redact_database_url(url)


@pytest.mark.parametrize(
    "value",
    [
        PASTED_TOKEN,
        "github" + "_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "glpat" + "-S3CR3Tgitlab0008",
        "a3f9c2d4e5b6a7980123456789abcdef01234567",  # a Gitea token: 40 hex digits
        "MY TOKEN",
        "1TOKEN",
    ],
)
def test_token_env_that_is_not_a_variable_name_is_refused_without_echo(value: str) -> None:
    data = {
        "sources": [{"kind": "gitea", "owner": "o", "base_url": "http://g", "token_env": value}]
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data, "/etc/enum.yaml")
    message = str(err.value)
    assert "/etc/enum.yaml" in message and "sources.0.gitea.token_env" in message
    assert value not in message


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "ci_gitea_token", "_T2", "GL_TOKEN_FOR_ORG_2"])
def test_token_env_names_are_accepted(name: str) -> None:
    data = {"sources": [{"kind": "github", "owner": "o", "token_env": name}]}
    assert parse_config(data, "x.yaml").sources[0].token_env == name


def test_yaml_error_does_not_echo_the_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "enum.yaml"
    path.write_text(f"sources:\n  - kind: github\n    token_env: [{PASTED_TOKEN}\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value) and "line" in str(err.value)
    assert PASTED_TOKEN not in str(err.value)


def _database_text(db_url: str) -> str:
    """Every row of every table of the inventory, as text (and the raw SQLite files)."""
    engine = sa.create_engine(db_url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            dumped = [repr(conn.execute(sa.select(t)).all()) for t in meta.sorted_tables]
    finally:
        engine.dispose()
    text = "\n".join(dumped)
    if db_url.startswith("sqlite:///"):
        base = db_url[len("sqlite:///") :]
        for suffix in ("", "-wal"):
            if os.path.exists(base + suffix):
                text += Path(base + suffix).read_bytes().decode("utf-8", "replace")
    return text


def _files_text(home: Path) -> str:
    parts = []
    for path in sorted(home.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_no_secret_reaches_output_database_or_dagster_home(cli, db_url, tmp_path):  # noqa: F811
    root = tmp_path / "src"
    make_repo(root / "hg-helper", remote=f"hg::https://me:{HG_HELPER_PASSWORD}@hg.example/r")
    make_repo(root / "git-ssh", remote=f"git+ssh://me:{GIT_SSH_PASSWORD}@git.example/o/r.git")
    hg = root / "mercurial"
    (hg / ".hg").mkdir(parents=True)
    (hg / ".hg" / "hgrc").write_text(
        f"[paths]\ndefault = https://me:{HGRC_PASSWORD}@hg.example/m\n"
    )
    app = GitHubApp(token=ENV_TOKEN, clone_credentials=f"deploy:{CLONE_PASSWORD}")
    app.add_owner("Acme", 12)
    shown_url = db_url
    if db_url.startswith("postgresql"):  # trust auth: the password is sent and ignored
        shown_url = f"{db_url}&password={DB_PASSWORD}"
    with FakeCodeHost(app) as host:
        config = tmp_path / "enum.yaml"
        config.write_text(
            "sources:\n"
            f"  - kind: filesystem\n    roots: [{root}]\n"
            f"  - kind: github\n    owner: Acme\n    base_url: {host.url}\n"
            f"    token_env: {TOKEN_ENV}\n"
        )
        env = {"ENUM_PIPELINE_DATABASE_URL": shown_url, TOKEN_ENV: ENV_TOKEN}
        code, out = cli("--log-level", "DEBUG", "run", "--config", str(config), extra_env=env)
        assert code == 0, out
        for command in (("runs",), ("db", "current"), ("history",)):
            more_code, more = cli(*command, extra_env=env)
            assert more_code == 0, more
            out += more
    assert {r.headers.get("authorization") for r in app.requests} == {f"Bearer {ENV_TOKEN}"}
    assert "found 15" in out, out  # the three checkouts and the twelve repositories

    pasted = tmp_path / "pasted.yaml"
    pasted.write_text(
        f"sources:\n  - kind: github\n    owner: Acme\n    token_env: {PASTED_TOKEN}\n"
    )
    code, refused = cli("run", "--config", str(pasted))
    assert code == 2 and str(pasted) in refused and "token_env" in refused
    out += refused

    database = _database_text(db_url)
    dagster_home = _files_text(cli.home)
    assert "hg.example/r" in database and "Repo-0000" in database  # the rows are there
    for secret in (
        DB_PASSWORD,
        HG_HELPER_PASSWORD,
        GIT_SSH_PASSWORD,
        HGRC_PASSWORD,
        PASTED_TOKEN,
        ENV_TOKEN,
        CLONE_PASSWORD,
    ):
        assert secret not in out, secret
        assert secret not in database, secret
        assert secret not in dagster_home, secret
