"""What the catalog shows is decided when the code location loads: owners and tags from the
configuration's ``catalog`` section, kinds from the database URL and the configured code
hosts, a freshness policy on ``run_state`` that follows the schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enum_pipeline.config import ConfigError, parse_config

PROBE = """
import json
from enum_pipeline.definitions import defs
graph = defs.resolve_asset_graph()
out = {}
for key in graph.get_all_asset_keys():
    node = graph.get(key)
    out[key.to_user_string()] = {
        "kinds": sorted(node.kinds), "owners": list(node.owners), "tags": dict(node.tags),
        "freshness": repr(node.freshness_policy) if node.freshness_policy else None,
    }
print(json.dumps(out))
"""


def _load(tmp_path: Path, config: dict | None, database_url: str, **env: str) -> dict:
    full = {**os.environ, "ENUM_PIPELINE_DATABASE_URL": database_url, **env}
    full.pop("ENUM_PIPELINE_CONFIG", None)
    if config is not None:
        path = tmp_path / "enum_pipeline.yaml"
        path.write_text(yaml.safe_dump(config))
        full["ENUM_PIPELINE_CONFIG"] = str(path)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_owners_tags_and_kinds_from_configuration(tmp_path):
    config = {
        "sources": [
            {"kind": "filesystem", "roots": [str(tmp_path)]},
            {"kind": "gitlab", "group": "grp"},
            {"kind": "github", "owner": "acme"},
        ],
        "catalog": {"owners": ["team:platform", "alice@example.com"], "tags": {"domain": "inv"}},
    }
    assets = _load(
        tmp_path,
        config,
        "postgresql+psycopg://u@db.example/inv",
        ENUM_PIPELINE_SCHEDULE="30 6 * * *",
    )
    for name in ("scanned_projects", "projects", "run_state", "inventory_summary"):
        assert assets[name]["owners"] == ["team:platform", "alice@example.com"], name
        assert assets[name]["tags"].get("domain") == "inv", name
    assert assets["scanned_projects"]["kinds"] == ["github", "gitlab", "python"]
    assert assets["projects"]["kinds"] == ["postgres"]
    assert assets["stale_projects_cleanup"]["kinds"] == ["postgres"]
    assert assets["inventory_frame"]["kinds"] == ["pandas"]
    assert "30 6 * * *" in assets["run_state"]["freshness"]


def test_defaults_without_a_configuration(tmp_path):
    assets = _load(tmp_path, None, f"sqlite:///{tmp_path / 'inv.sqlite'}")
    assert assets["projects"]["kinds"] == ["sqlite"]
    assert assets["scanned_projects"]["kinds"] == ["python"]
    assert assets["projects"]["owners"] == []
    assert "0 * * * *" in assets["run_state"]["freshness"]


def test_an_owner_dagster_would_refuse_is_a_configuration_error():
    with pytest.raises(ConfigError, match="catalog.owners: .*'platform' is neither"):
        parse_config(
            {"sources": [{"kind": "filesystem", "roots": ["/x"]}],
             "catalog": {"owners": ["platform"]}},
            "test.yaml",
        )  # fmt: skip
