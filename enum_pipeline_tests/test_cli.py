"""End to end through the ``enum-pipeline`` console script, on both backends."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.helpers import install_fault, make_repo

CLI = str(Path(sys.executable).with_name("enum-pipeline"))


@pytest.fixture
def cli(db_url, tmp_path):
    """Run the CLI with a fresh Dagster home and inventory database; returns (code, output)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENUM_PIPELINE_DATABASE_URL": db_url,
    }
    for name in ("ENUM_PIPELINE_CONFIG", "ENUM_PIPELINE_ROOTS"):
        env.pop(name, None)

    def run(*args: str, extra_env: dict | None = None) -> tuple[int, str]:
        proc = subprocess.run(
            [CLI, *args],
            env={**env, **(extra_env or {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc.returncode, proc.stdout + proc.stderr

    run.home = home
    return run


@pytest.fixture
def inventory(db_url):
    store = InventoryStore(db_url)
    yield store
    store.dispose()


def _names(store: InventoryStore) -> set[str]:
    return {r["name"] for r in store.projects()}


def _run_id(output: str) -> str:
    return re.search(r"^run (\S+) \(generation", output, re.M).group(1)


def test_run_delete_run_removes_the_repository_and_keeps_history(cli, inventory, repo_tree):
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 0, out
    assert "found 5, added 5" in out
    assert _names(inventory) == {"alpha", "beta", "gamma", "delta", "epsilon"}
    shutil.rmtree(repo_tree / "gamma")
    code, out = cli("run", "--root", str(repo_tree), "--reports")
    assert code == 0, out
    assert "removed 1" in out
    assert "gamma" not in _names(inventory)
    run_id = _run_id(out)
    assert [h.row["name"] for h in inventory.history(run_id)] == ["gamma"]
    with DagsterInstance.from_config(str(cli.home)) as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    # one Dagster run an enum-pipeline run (its cleanup inside), and the reports it was asked for
    assert {r.job_name for r in runs} == {"enumerate_and_clean_up", "inventory_reports"}
    assert len([r for r in runs if r.job_name == "enumerate_and_clean_up"]) == 2
    code, out = cli("restore", run_id)
    assert code == 0 and "restored 1" in out
    assert "gamma" in _names(inventory)


def test_run_leaves_the_reports_to_the_sensor_unless_asked_or_an_export_is_configured(
    cli, repo_tree, tmp_path
):
    """The pandas reports are most of ``run``'s own time: by default it says who makes them
    and makes none; ``--reports`` makes them in the process, tagged with the run; a configured
    export file is written by the run itself (a cron job's consumer reads it)."""

    def reports_runs() -> list:
        with DagsterInstance.from_config(str(cli.home)) as instance:
            return instance.get_runs(RunsFilter(job_name="inventory_reports"))

    code, out = cli("run", "--root", str(repo_tree))
    assert code == 0, out
    assert "reports: left to the sensor reports_after_enumeration" in out
    assert reports_runs() == []

    code, out = cli("run", "--root", str(repo_tree), "--reports")
    assert code == 0, out
    [made] = reports_runs()
    assert made.status == DagsterRunStatus.SUCCESS
    assert made.tags["enum_pipeline/enumeration_run"] == _run_id(out)

    export = tmp_path / "inventory.csv"
    config = tmp_path / "sources.yaml"
    config.write_text(
        f"sources:\n  - kind: filesystem\n    roots: [{json.dumps(str(repo_tree))}]\n"
        f"catalog:\n  export_path: {json.dumps(str(export))}\n"
    )
    code, out = cli("run", "--config", str(config))
    assert code == 0, out
    assert "reports: left" not in out
    assert len(reports_runs()) == 2
    assert "alpha" in export.read_text()

    code, out = cli("run", "--config", str(config), "--no-reports")
    assert code == 0, out
    assert len(reports_runs()) == 2


def test_failed_flush_removes_nothing_and_exits_1(cli, inventory, repo_tree, db_url):
    assert cli("run", "--root", str(repo_tree))[0] == 0
    shutil.rmtree(repo_tree / "beta")
    install_fault(db_url, "abort_upsert")
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 1, out
    assert "injected: disk full" in out and "nothing was removed" in out
    assert _names(inventory) == {"alpha", "beta", "gamma", "delta", "epsilon"}
    assert inventory.runs(1)[0].status == "failed"


def test_missing_root_removes_nothing_under_it(cli, inventory, tmp_path, repo_tree):
    other = tmp_path / "other"
    make_repo(other / "omega")
    roots = os.pathsep.join([str(repo_tree), str(other)])
    assert cli("run", extra_env={"ENUM_PIPELINE_ROOTS": roots})[0] == 0
    assert "omega" in _names(inventory)
    shutil.move(other, tmp_path / "moved-away")
    shutil.rmtree(repo_tree / "alpha")
    code, out = cli("run", extra_env={"ENUM_PIPELINE_ROOTS": roots})
    assert code == 0, out
    assert f"incomplete scope fs:{other}" in out
    assert "omega" in _names(inventory)
    assert "alpha" not in _names(inventory)  # the readable root is still cleaned


def test_guard_holds_back_emptying_a_root_until_approved(cli, inventory, repo_tree):
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 0, out
    for child in repo_tree.iterdir():
        shutil.rmtree(child)
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 3, out
    run_id = _run_id(out)
    plan_id = inventory.blocked_plan(run_id).plan_id
    assert "would remove all 5" in out and f"enum-pipeline approve {run_id} --plan {plan_id}" in out
    assert len(_names(inventory)) == 5
    code, dry = cli("cleanup", run_id, "--dry-run")
    assert code == 3 and "(dry run)" in dry and f"fs:{repo_tree}: 5 projects, 5 not seen" in dry
    assert len(_names(inventory)) == 5
    # a second cleanup of the same flush does nothing and says whose cleanup it is
    code, again = cli("cleanup", run_id)
    assert code == 3 and "enum-pipeline run)'s" in again and "this request did nothing" in again
    code, out = cli("approve", run_id, "--plan", "0123456789ab")  # not the plan shown
    assert code == 2 and f"that is plan {plan_id} now" in out and "nothing was approved" in out
    assert len(_names(inventory)) == 5
    code, out = cli("approve", run_id, "--plan", plan_id)
    assert code == 0, out
    assert _names(inventory) == set()


def test_bad_config_names_the_key_and_the_file(cli, inventory, tmp_path):
    config = tmp_path / "enum.yaml"
    config.write_text("sources:\n  - kind: filesystem\n    rots: [/tmp]\n")
    code, out = cli("run", "--config", str(config))
    assert code == 2
    assert str(config) in out and "sources.0.filesystem.roots" in out and "rots" in out
    assert inventory.runs() == []


def test_no_sources_is_a_usage_error(cli):
    code, out = cli("run")
    assert code == 2 and "ENUM_PIPELINE_ROOTS" in out


def test_config_file_with_policy(cli, inventory, repo_tree, tmp_path):
    config = tmp_path / "enum.yaml"
    config.write_text(
        f"sources:\n  - kind: filesystem\n    roots: [{repo_tree}]\n"
        "cleanup:\n  missing_runs_before_delete: 2\n"
    )
    assert cli("run", extra_env={"ENUM_PIPELINE_CONFIG": str(config)})[0] == 0
    shutil.rmtree(repo_tree / "beta")
    code, out = cli("run", extra_env={"ENUM_PIPELINE_CONFIG": str(config)})
    assert code == 0 and "marked missing 1" in out, out
    assert "beta" in _names(inventory)
    code, out = cli("run", extra_env={"ENUM_PIPELINE_CONFIG": str(config)})
    assert code == 0 and "removed 1" in out, out
    assert "beta" not in _names(inventory)


STRICT = "cleanup:\n  max_delete_count: 1\n"


@pytest.mark.parametrize("breakage", ["broken", "absent"])
def test_a_blocked_cleanup_stays_blocked_when_the_config_breaks(
    cli, inventory, repo_tree, tmp_path, breakage
):
    """The cleanup applies the policy its run began with: a broken or missing configuration at
    cleanup time neither loosens it nor falls back to the defaults (which would allow it)."""
    config = tmp_path / "enum.yaml"
    config.write_text(f"sources:\n  - kind: filesystem\n    roots: [{repo_tree}]\n{STRICT}")
    assert cli("run", "--config", str(config))[0] == 0
    shutil.rmtree(repo_tree / "beta")
    shutil.rmtree(repo_tree / "gamma")
    code, out = cli("run", "--config", str(config))
    assert code == 3 and "max_delete_count=1" in out, out
    run_id = _run_id(out)
    if breakage == "broken":
        config.write_text("sources: [\n")
    else:
        config.unlink()
    for args in (["cleanup", run_id, "--config", str(config)], ["cleanup", run_id]):
        code, out = cli(*args, extra_env={"ENUM_PIPELINE_CONFIG": str(config)})
        assert code == 3, out
        assert "blocked" in out and "would remove 2" in out and "max_delete_count=1" in out
    assert len(_names(inventory)) == 5
    runs = len(inventory.runs())
    code, out = cli("run", "--config", str(config))  # unreadable at begin: refused
    assert code == 2 and str(config) in out, out
    assert len(inventory.runs()) == runs


def test_accept_from_the_cli_records_who_accepted(cli, inventory):
    from enum_pipeline_tests.helpers import SCOPE, key, run_verdicts

    run_verdicts(inventory, {SCOPE: ["a", "b"]}, verdicts={SCOPE: {"identity": {"st_dev": 1}}})
    held, result = run_verdicts(
        inventory, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": {"st_dev": 2}}}
    )
    assert result.held == 1
    code, out = cli("accept", SCOPE)
    assert code == 0 and f"read by run {held}" in out, out
    reading = inventory.scopes(held)[0]
    assert reading.trusted and reading.identity_accepted_by.startswith("cli:")
    _, result = run_verdicts(
        inventory, {SCOPE: ["a"]}, verdicts={SCOPE: {"identity": {"st_dev": 2}}}
    )
    assert result.removed_keys == [key("b")]
    code, out = cli("accept", "fs:/no/such/root")
    assert code != 0 and "no completed run read scope fs:/no/such/root" in out


def test_prune_orphans_from_the_cli_with_history_and_restore(cli, inventory):
    from enum_pipeline_tests.helpers import SCOPE, key, run_verdicts

    other = "fs:/srv/other"
    run_verdicts(inventory, {SCOPE: ["a"], other: ["x", "y"]}, configured=[SCOPE, other])
    run_verdicts(inventory, {SCOPE: ["a"]}, configured=[SCOPE])
    code, out = cli("runs")
    assert code == 0 and "orphaned: 2" in out and key("x", other) in out, out
    code, out = cli("prune-orphans", "--dry-run")
    assert code == 3 and "would remove 2" in out and key("y", other) in out, out
    assert cli("prune-orphans")[0] == 3
    assert len(inventory.project_keys()) == 3
    code, out = cli("prune-orphans", "--approve")
    assert code == 0 and "removed 2" in out, out
    assert inventory.project_keys() == {key("a")}
    prune_id = re.search(r"enum-pipeline restore (\S+)", out).group(1)
    code, out = cli("restore", prune_id)
    assert code == 0 and "restored 2" in out
    assert len(inventory.project_keys()) == 3


def test_rows_out_of_coverage_are_listed_with_their_reason(cli, inventory):
    from enum_pipeline_tests.helpers import SCOPE, key, run_verdicts

    full = {"skip_names": [], "max_depth": None, "nested": True}
    run_verdicts(inventory, {SCOPE: ["a", "vendor/b"]}, verdicts={SCOPE: {"coverage": full}})
    narrowed = {"coverage": {**full, "skip_names": ["vendor"]}}
    _, result = run_verdicts(inventory, {SCOPE: ["a"]}, verdicts={SCOPE: narrowed})
    assert result.removed == 0 and result.out_of_coverage == 1
    code, out = cli("projects", "--status", "out_of_coverage", "--format", "json")
    assert code == 0, out
    listed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["project_key"], r["status"]) for r in listed] == [
        (key("vendor/b"), "out_of_coverage")
    ]
    code, out = cli("runs")
    assert code == 0 and "kept out of coverage: 1, orphaned: 0" in out
    assert f"{key('vendor/b')} — out of coverage: skip_names holds 'vendor'" in out


def _one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith("enum-pipeline: "), out
    return lines[0]


@pytest.mark.parametrize("command", [("cleanup",), ("approve",), ("history",), ("diff",)])
def test_unknown_run_id_is_one_line_naming_the_runs_that_exist(cli, inventory, repo_tree, command):
    assert cli("run", "--root", str(repo_tree))[0] == 0
    [run] = inventory.runs()
    code, out = cli(*command, "no-such-run")
    assert code == 2
    line = _one_line(out)
    assert "no-such-run" in line and run.run_id in line
    assert len(inventory.runs()) == 1


def test_approve_without_a_blocked_cleanup_and_restore_without_removals_say_so(
    cli, inventory, repo_tree
):
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 0, out
    run_id = _run_id(out)
    code, out = cli("approve", run_id)
    assert code == 2 and "not blocked" in _one_line(out) and "no cleanup is blocked" in out
    code, out = cli("restore", run_id)
    assert code == 2 and "nothing to restore" in _one_line(out)
    shutil.rmtree(repo_tree / "gamma")
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 0 and "removed 1" in out, out
    second = _run_id(out)
    code, out = cli("restore", run_id)  # the first run removed nothing: name the one that did
    assert code == 2 and second in _one_line(out) and "gamma" in out


def test_bad_inputs_exit_2_with_one_line_and_begin_nothing(cli, inventory, tmp_path):
    bad_owner = tmp_path / "owner.yaml"
    bad_owner.write_text("sources:\n  - kind: github\n    owner: acme/tools\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("sources: []  # caf\xe9\n".encode("latin-1"))
    folder = tmp_path / "a-folder.yaml"
    folder.mkdir()
    cases = [
        (("run", "--root", ""), "--root needs a folder"),
        (("run", "--config", str(bad_owner)), "sources.0.github: invalid GitHub owner"),
        (("run", "--config", str(latin1)), "not UTF-8"),
        (("run", "--config", str(folder)), "cannot read configuration file"),
        (("run", "--config", str(tmp_path / "missing.yaml")), "cannot read configuration file"),
    ]
    for args, expected in cases:
        code, out = cli(*args)
        assert code == 2, (args, out)
        assert expected in _one_line(out), (args, out)
    assert str(bad_owner) in cli("run", "--config", str(bad_owner))[1]
    assert inventory.runs() == []


@pytest.mark.parametrize(
    "url, expected",
    [
        ("not a url", "Could not parse SQLAlchemy URL"),
        ("nosuchdb://user@host/db", "is not usable"),
        ("postgresql+psycopg://enum:s3cret@127.0.0.1:1/inventory", "cannot open the inventory"),
    ],
)
def test_wrong_database_url_is_one_line_without_the_password(cli, repo_tree, url, expected):
    code, out = cli("run", "--root", str(repo_tree), extra_env={"ENUM_PIPELINE_DATABASE_URL": url})
    assert code == 2
    assert expected in _one_line(out)
    assert "s3cret" not in out


def test_a_refused_second_run_says_who_holds_the_inventory(cli, inventory, repo_tree):
    inventory.begin("holder-run")
    code, out = cli("run", "--root", str(repo_tree))
    assert code == 2
    line = _one_line(out)
    root = os.path.realpath(repo_tree)
    assert line.startswith(f"enum-pipeline: scope fs:{root} is being read by run holder-run")
    assert f"pid {os.getpid()}" in line and "since" in line and "taken over" in line
    assert [r.run_id for r in inventory.runs()] == ["holder-run"]


def test_a_run_over_other_scopes_neither_refuses_nor_is_refused(cli, inventory, repo_tree):
    """A live run over another scope does not stop ``run``; one over the run's root does, in
    one sentence naming the run and that scope."""
    root = os.path.realpath(repo_tree)
    inventory.begin("elsewhere", scopes=["fs:/srv/elsewhere"])
    code, out = cli("run", "--root", str(repo_tree), "--no-reports")
    assert code == 0, out
    assert inventory.get_run("elsewhere").status == "active"
    mine = [s for s in inventory.runs() if s.run_id != "elsewhere"][0].scopes
    assert mine and all(root in scope for scope in mine)
    inventory.fail("elsewhere", "test")
    inventory.begin("holder-run", scopes=mine)
    code, out = cli("run", "--root", str(repo_tree), "--no-reports")
    assert code == 2
    assert _one_line(out).startswith(
        f"enum-pipeline: scope {mine[0]} is being read by run holder-run"
    )


def test_the_cli_runs_the_code_locations_jobs():
    """The CLI builds its jobs from a few defs modules (not the whole folder); they are the code
    location's jobs exactly (same snapshot: assets, checks, resources), so its runs look alike
    in the UI."""
    from enum_pipeline.cli import CLI_JOBS, _job
    from enum_pipeline.definitions import defs

    for name in CLI_JOBS:
        ours, theirs = _job(name), defs.resolve_job_def(name)
        assert ours.get_job_snapshot_id() == theirs.get_job_snapshot_id(), name
