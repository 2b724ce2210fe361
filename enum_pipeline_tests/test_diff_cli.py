"""``enum-pipeline diff`` end to end and the ``run_changes`` asset, both on
``store.run_changes`` (CONTRACTS.md 5), on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from enum_pipeline_tests.test_report_assets import _materialize, _meta, enumerated  # noqa: F401

CLI = str(Path(sys.executable).with_name("enum-pipeline"))


def _json(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_diff_lists_added_and_changed_with_fields(db_url, tmp_path):
    """Two runs: the second sees a new checkout and a new commit in another; ``diff`` (the
    latest run by default) lists both, the changed one with its fields; an unknown run id is
    a one-line usage error."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "ENUM_PIPELINE_DATABASE_URL": db_url}
    env.pop("ENUM_PIPELINE_CONFIG", None)

    def run(*args: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        return proc.returncode, proc.stdout, proc.stderr

    from enum_pipeline_tests.conftest import git, make_repo

    src = tmp_path / "src"
    make_repo(src / "one")
    make_repo(src / "two")
    code, out, err = run("run", "--root", str(src), "--no-reports")
    assert code == 0, out + err
    (src / "one" / "more.txt").write_text("more\n")
    git(src / "one", "add", ".")
    git(src / "one", "commit", "-q", "-m", "more")
    make_repo(src / "three")
    code, out, err = run("run", "--root", str(src), "--no-reports")
    assert code == 0, out + err

    code, out, err = run("diff", "--format", "json")
    assert code == 0, err
    changes = {r["name"]: r for r in _json(out)}
    assert set(changes) == {"one", "three"}
    assert changes["three"]["change"] == "added"
    assert changes["one"]["change"] == "changed"
    assert {"head_commit", "last_commit_at"} <= set(changes["one"]["fields"])
    code, out, err = run("diff", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "change,name,scope_key,fields,project_key,run_id"
    code, out, err = run("diff")
    assert code == 0 and out.splitlines()[0].split() == ["CHANGE", "NAME", "SCOPE_KEY", "FIELDS"]

    code, out, err = run("diff", "no-such-run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("enum-pipeline: no run 'no-such-run' in the inventory; newest runs: ")


def test_run_changes_asset(enumerated):  # noqa: F811 (the imported fixture)
    """``run_changes`` materialized through Dagster: the latest run's delta in its metadata."""
    instance, result = enumerated
    assert _materialize(instance, ["run_changes"]).success
    meta = _meta(instance, "run_changes")
    assert meta["run_id"] == result.run_id
    assert (meta["added"], meta["changed"], meta["removed"]) == (8, 0, 0)
    assert "old-tool" in meta["changes"]
