"""The CLI answers every input in one line: output cut by a closed pipe ends quietly, numbers out
of range, bad output paths and a missing ``--root`` are one line with exit 2 and nothing begun,
and a run id may be a unique prefix (resolved once, by ``InventoryStore.resolve_run_id``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import instance_for_test

from enum_pipeline.cli import EXIT_PIPE, EXIT_USAGE, main
from enum_pipeline.defs.constants import cleanup_run_config
from enum_pipeline.store import AmbiguousRunError, InventoryStore, UnknownRunError
from enum_pipeline_tests.helpers import rec, scope_partitions, verdict

CLI = str(Path(sys.executable).with_name("enum-pipeline"))
KEEP, GONE = "fs:/srv/keep", "fs:/srv/gone"
# Ids shaped like Dagster's; the first two share "abcd", the third has a LIKE wildcard in it.
FIRST = "abcd1234-0000-4000-8000-000000000001"
SECOND = "abcd5678-0000-4000-8000-000000000002"
WILD = "ab_x9999-0000-4000-8000-000000000003"


def _run(store: InventoryStore, run_id: str, seen: dict[str, list[str]], configured=None):
    """One completed run that saw ``seen`` (scope -> names), and its cleanup."""
    store.begin(run_id, configured_scopes=configured)
    for scope, names in seen.items():
        store.stage(run_id, [rec(n, scope) for n in names])
        store.end_scope(run_id, verdict(scope, seen=len(names)))
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    store.safe_cleanup_old_projects(run_id)


@pytest.fixture
def history(db_url):
    """Three runs (FIRST, SECOND, WILD; the last no longer configures GONE) and a prune of
    GONE's orphaned rows; returns ``(store, prune_id)``."""
    store = InventoryStore(db_url)
    _run(store, FIRST, {KEEP: ["a"], GONE: ["old"]}, [KEEP, GONE])
    _run(store, SECOND, {KEEP: ["a"], GONE: ["old"]}, [KEEP, GONE])
    _run(store, WILD, {KEEP: ["a", "b"]}, [KEEP])
    prune = store.prune_orphans(approved_by="test")
    assert prune.removed == 1, prune
    yield store, prune.run_id
    store.dispose()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("enum-pipeline: "), err
    return lines[0]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """``main([...])`` in this process on a SQLite file and a Dagster home neither of which
    exists yet (so a test can check nothing was begun)."""
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", f"sqlite:///{tmp_path / 'inv.sqlite'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name in ("ENUM_PIPELINE_CONFIG", "ENUM_PIPELINE_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _nothing_begun(tmp_path: Path) -> None:
    assert not (tmp_path / "inv.sqlite").exists()
    assert not (tmp_path / "dagster_home").exists()


# ------------------------------------------------------------------ the store's resolution


def test_resolve_run_id_takes_exact_ids_and_unique_prefixes(history):
    store, prune_id = history
    assert store.resolve_run_id(FIRST) == FIRST
    assert store.resolve_run_id(FIRST[:8]) == FIRST  # what the Dagster UI shows
    assert store.resolve_run_id(SECOND[:5]) == SECOND
    assert store.resolve_run_id("ab_x") == WILD
    with pytest.raises(AmbiguousRunError) as ambiguous:
        store.resolve_run_id("abcd")
    assert FIRST in str(ambiguous.value) and SECOND in str(ambiguous.value)
    # "_" is no wildcard, case counts (SQLite's LIKE ignores it), fewer than 4 is no prefix.
    for given in ("ab_d", "ABCD1234", "abc", FIRST + "0"):
        with pytest.raises(UnknownRunError) as unknown:
            store.resolve_run_id(given)
        assert repr(given) in str(unknown.value) and WILD in str(unknown.value)
    assert "4 characters" in str(pytest.raises(UnknownRunError, store.resolve_run_id, "abc").value)
    # A prune's id is a target of restore and history only.
    with pytest.raises(UnknownRunError):
        store.resolve_run_id(prune_id[:12])
    assert store.resolve_run_id(prune_id[:12], removals=True) == prune_id
    assert store.resolve_run_id(prune_id, removals=True) == prune_id


# ------------------------------------------------------------------ the CLI on prefixes


def test_cli_takes_a_run_id_prefix_wherever_it_takes_a_run_id(
    history, db_url, isolated, monkeypatch, capsys
):
    store, prune_id = history
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    assert main(["diff", WILD[:8], "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["name"], r["run_id"]) for r in rows} == {("b", WILD)}
    assert main(["history", prune_id[:10]]) == 0
    [removed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert removed["removed_by_run_id"] == prune_id
    assert main(["accept", KEEP, "--run", WILD[:8]]) == 0
    assert f"read by run {WILD}" in capsys.readouterr().out
    for command in (["diff", "abcd"], ["restore", "abcd"], ["accept", KEEP, "--run", "abcd"]):
        assert main(command) == EXIT_USAGE
        line = _one_line(capsys.readouterr().err)
        assert "ambiguous" in line and FIRST in line and SECOND in line, command


def test_dagster_cleanup_and_restore_take_a_run_id_prefix(history, db_url, monkeypatch):
    store, prune_id = history
    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    from enum_pipeline.definitions import defs

    with instance_for_test() as instance:
        tags = scope_partitions(instance, [s.scope_key for s in store.scopes(WILD)])
        dry = defs.resolve_job_def("cleanup_projects").execute_in_process(
            instance=instance, run_config=cleanup_run_config(WILD[:8], dry_run=True), tags=tags
        )
        assert dry.output_for_node("stale_projects_cleanup")["run_id"] == WILD
        restore = defs.resolve_job_def("restore_projects").execute_in_process(
            instance=instance,
            run_config={"ops": {"restore_removed_projects": {"config": {"run_id": prune_id[:10]}}}},
        )
    assert len(restore.output_for_node("restore_removed_projects")) == 1
    assert store.project_keys(GONE) == {rec("old", GONE).project_key}


# ------------------------------------------------------------------ one line, nothing begun


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--limit", "-1"],
        ["runs", "--limit", "0"],
        ["runs", "--limit", "99999999999999999999"],
        ["runs", "--limit", "ten"],
        ["projects", "--stale-days", "-3"],
        ["projects", "--stale-days", "99999999999"],
        ["export", "--stale-days", "-1", "--output", "out.csv"],
        ["ui", "--port", "0"],
        ["ui", "--port", "70000"],
    ],
)
def test_out_of_range_numbers_are_one_line_naming_the_option(isolated, capsys, args):
    assert main(args) == EXIT_USAGE
    out, err = capsys.readouterr()
    option = next(a for a in args if a.startswith("--"))
    assert out == "" and f"{option} must be" in _one_line(err)
    _nothing_begun(isolated)
    assert not (isolated / "out.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("where", ["a folder", "missing/out.file", "a-file/out.file"])
def test_bad_output_paths_are_one_line_and_write_nothing(isolated, capsys, fmt, where):
    (isolated / "a folder").mkdir()
    (isolated / "a-file").write_text("")
    before = sorted(p.name for p in isolated.rglob("*"))
    assert main(["export", "--format", fmt, "--output", str(isolated / where)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and "--output" in _one_line(err)
    assert sorted(p.name for p in isolated.rglob("*")) == before
    assert not (isolated / "inv.sqlite").exists()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_root_that_is_no_folder_begins_nothing(isolated, capsys, kind):
    root = isolated / "no" / "such" / "dir"
    if kind == "file":
        root = isolated / "a-file"
        root.write_text("")
    assert main(["run", "--root", str(root)]) == EXIT_USAGE
    line = _one_line(capsys.readouterr().err)
    assert str(root) in line and ("does not exist" if kind == "missing" else "not a folder") in line
    _nothing_begun(isolated)


# ------------------------------------------------------------------ output into a closed pipe


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory):
    """A SQLite inventory whose one run saw 4000 projects (far more output than a pipe holds)."""
    path = tmp_path_factory.mktemp("many") / "inv.sqlite"
    store = InventoryStore(f"sqlite:///{path}")
    _run(store, FIRST, {KEEP: [f"project-{i:05d}" for i in range(4000)]})
    store.dispose()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "args", [["projects"], ["projects", "--format", "json"], ["diff", "--format", "csv"]]
)
def test_output_into_head_ends_quietly(many_rows, tmp_path, args):
    env = {**os.environ, "ENUM_PIPELINE_DATABASE_URL": many_rows}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    cli = subprocess.Popen(
        [CLI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = subprocess.Popen(["head", "-1"], stdin=cli.stdout, stdout=subprocess.PIPE)
    cli.stdout.close()  # head holds the only reading end: it closes it after one line
    first, _ = head.communicate(timeout=120)
    err = cli.stderr.read().decode()
    assert cli.wait(timeout=120) == EXIT_PIPE, err
    assert err == ""
    assert first.count(b"\n") == 1
