"""The project is a dg project dg can extend: in a fresh copy, ``dg scaffold defs dagster.asset
my_report.py`` adds a module to ``enum_pipeline/defs`` and ``dg check defs`` loads it with the
rest (``load_from_defs_folder``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".dagster_home", "__pycache__", "*.egg-info", ".*_cache", "*.sqlite*"
)


def _dg(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(cwd / ".dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    (cwd / ".dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not DG.exists(), reason="dg is installed with dagster-dg-cli")
def test_dg_scaffold_and_check_in_a_fresh_copy(tmp_path: Path) -> None:
    copy = tmp_path / "enum_pipeline_copy"
    shutil.copytree(REPO, copy, ignore=IGNORE)
    scaffold = _dg(copy, "scaffold", "defs", "dagster.asset", "my_report.py")
    assert scaffold.returncode == 0, scaffold.stdout + scaffold.stderr
    assert (copy / "enum_pipeline" / "defs" / "my_report.py").is_file()

    check = _dg(copy, "check", "defs")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr

    listed = _dg(copy, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    assets = {a["asset_key"]: a for a in json.loads(listed.stdout)["assets"]}
    assert "my_report" in assets  # the copy's defs folder, not the installed package
    assert {"inventory_frame", "inventory_summary", "clone_coverage", "run_changes"} <= set(assets)
    assert assets["inventory_summary"]["kinds"] == ["pandas"]
    assert set(assets["projects"]["kinds"]) == {"sqlite"}
