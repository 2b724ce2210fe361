"""``enum-pipeline projects`` / ``export`` end to end: a real run over real checkouts and a fake
GitHub organisation, then every filter and format, on both backends."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enum_pipeline.store.query import OUTPUT_COLUMNS
from enum_pipeline_tests.conftest import pg_schema_url
from enum_pipeline_tests.fake_codehosts import FakeCodeHost
from enum_pipeline_tests.product_fixtures import github_app, make_tree, write_config

CLI = str(Path(sys.executable).with_name("enum-pipeline"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def product(request, tmp_path_factory):
    """One completed run over the product tree (per backend, shared by this module's tests,
    which only read); returns ``run(*args) -> (code, out, err)``."""
    tmp_path = tmp_path_factory.mktemp("product")
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'inventory.sqlite'}"
    else:
        db_url = pg_schema_url(request.getfixturevalue("pg_database"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ENUM_PIPELINE_DATABASE_URL": db_url}
    for name in ("ENUM_PIPELINE_CONFIG", "ENUM_PIPELINE_ROOTS"):
        env.pop(name, None)

    def run(*args: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        return proc.returncode, proc.stdout, proc.stderr

    with FakeCodeHost(github_app()) as host:
        config = write_config(tmp_path, make_tree(tmp_path), host.url)
        code, out, err = run("run", "--config", str(config), "--no-cleanup", "--no-reports")
        assert code == 0, out + err
    run.config = config
    run.env, run.cwd = env, tmp_path
    return run


def _json(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_projects_json_has_every_column(product):
    code, out, err = product("projects", "--format", "json")
    assert code == 0, err
    rows = _json(out)
    assert len(rows) == 8  # five checkouts, three hosted repositories
    assert all(list(r) == list(OUTPUT_COLUMNS) for r in rows)
    by_name = {(r["source_kind"], r["name"]): r for r in rows}
    app = by_name[("filesystem", "app")]
    assert app["current_branch"] == "feature" and app["vcs"] == "git"
    assert app["remotes"] == {"origin": "https://github.com/Acme/Repo-0000.git"}
    assert app["status"] == "present" and "pyproject.toml" in app["markers"]
    assert app["in_sync"] is None and app["shallow"] is False  # no upstream configured
    tool = by_name[("github", "old-tool")]
    assert tool["archived"] is True and tool["language"] == "Go" and tool["topics"] == ["infra"]
    assert tool["license"] == "MIT" and tool["visibility"] == "public"
    assert tool["last_activity_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--source", "github"], {"Repo-0000", "Repo-0001", "old-tool"}),
        (["--archived"], {"old-tool"}),
        (["--no-archived", "--source", "GitHub"], {"Repo-0000", "Repo-0001"}),
        (["--language", "go"], {"old-tool"}),
        (["--topic", "infra"], {"old-tool"}),
        (["--name", "app*"], {"app", "app-again"}),
        (["--visibility", "public", "--name", "repo-*"], {"Repo-0000", "Repo-0001"}),
        (["--stale-days", "365", "--source", "github"], {"Repo-0000", "Repo-0001", "old-tool"}),
        (["--stale-days", "365", "--source", "filesystem"], set()),
        (["--status", "missing"], set()),
        (["--fork", "--source", "github"], set()),
    ],
)
def test_projects_filters(product, args, names):
    code, out, err = product("projects", "--format", "json", *args)
    assert code == 0, err
    assert {r["name"] for r in _json(out)} == names


def test_projects_scope_filter(product):
    _, out, _ = product("projects", "--format", "json", "--source", "filesystem")
    scope = _json(out)[0]["scope_key"]
    code, out, err = product("projects", "--format", "json", "--scope", scope)
    assert code == 0, err
    assert {r["source_kind"] for r in _json(out)} == {"filesystem"} and len(_json(out)) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "sourcehut"], "unknown --source 'sourcehut'"),
        (["--scope", "fs:/nowhere"], "unknown --scope 'fs:/nowhere'"),
        (["--language", "COBOL"], "unknown --language 'COBOL'; known: Go, Python"),
        (["--topic", "nope"], "unknown --topic 'nope'"),
        (["--visibility", "secret"], "unknown --visibility 'secret'"),
        (
            ["--status", "gone"],
            "unknown --status 'gone'; known: missing, orphaned, out_of_coverage, present",
        ),
        (["--stale-days", "-1"], "--stale-days must be 0 or more"),
    ],
)
def test_unknown_filter_value_is_a_one_line_usage_error(product, args, message):
    code, out, err = product("projects", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_projects_table_and_csv(product):
    code, out, err = product("projects")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [c.upper() for c in ("name", "source_kind", "location",
        "visibility", "archived", "language", "last_activity_at", "status")]  # fmt: skip
    assert len(lines) == 9 and any(line.startswith("old-tool ") for line in lines)
    code, out, err = product("projects", "--format", "csv", "--source", "github")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(OUTPUT_COLUMNS) and len(rows) == 3
    tool = next(r for r in rows if r["name"] == "old-tool")
    assert tool["archived"] == "true" and json.loads(tool["topics"]) == ["infra"]
    assert tool["current_branch"] == ""  # unknown for a hosted repository


def test_export_csv_and_parquet(product, tmp_path):
    import pandas as pd

    target = tmp_path / "inventory.csv"
    code, _, err = product("export", "--format", "csv", "--output", str(target))
    assert code == 0, err
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 8 and list(rows[0]) == list(OUTPUT_COLUMNS)

    target = tmp_path / "inventory.parquet"
    code, _, err = product("export", "--format", "parquet", "--output", str(target), "--archived")
    assert code == 0, err
    df = pd.read_parquet(target)
    assert list(df.columns) == list(OUTPUT_COLUMNS) and df["name"].tolist() == ["old-tool"]
    assert bool(df.loc[0, "archived"]) is True and list(df.loc[0, "topics"]) == ["infra"]
    assert str(df["last_activity_at"].dtype).startswith("datetime64")
    assert pd.isna(df.loc[0, "current_branch"])


def test_cli_start_up_does_not_import_pandas():
    code = (
        "import sys; import enum_pipeline.cli as c; c.build_parser();"
        "import enum_pipeline.store.query, enum_pipeline.reports;"
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_read_commands_do_not_import_dagster(product, tmp_path):
    """``projects``, ``runs``, ``diff``, ``history`` and ``export`` read the inventory only: they
    never import Dagster (nor pandas, but for a Parquet export)."""
    commands = [
        ["projects", "--format", "json"],
        ["runs"],
        ["diff"],
        ["history"],
        ["export", "--output", str(tmp_path / "inventory.csv")],
    ]
    code = (
        "import json, sys; import enum_pipeline.cli as c\n"
        f"for argv in {commands!r}:\n"
        "    assert c._main(argv) == 0, argv\n"
        "    print(json.dumps([argv[0], 'dagster' in sys.modules, 'pandas' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=product.env,
        cwd=product.cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]
    assert seen == [[argv[0], False, False] for argv in commands], seen
