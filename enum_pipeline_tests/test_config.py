"""Configuration: clear errors naming the key and the file; the roots shortcut."""

from __future__ import annotations

import os

import pytest

from enum_pipeline.config import ConfigError, load_config


def test_roots_shortcut_splits_on_pathsep(monkeypatch, tmp_path):
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", os.pathsep.join(["/srv/a", "/srv/b", ""]))
    config = load_config()
    assert config.sources[0].roots == ["/srv/a", "/srv/b"]
    assert [s.scope_keys() for s in config.build_sources()] == [["fs:/srv/a"], ["fs:/srv/b"]]


def test_config_file_wins_over_roots(monkeypatch, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - kind: gitea\n    owner: infra\n    base_url: http://g\n")
    monkeypatch.setenv("ENUM_PIPELINE_CONFIG", str(path))
    monkeypatch.setenv("ENUM_PIPELINE_ROOTS", "/srv/a")
    assert load_config().sources[0].kind == "gitea"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources: []\n", "sources: List should have at least 1 item"),
        ("sources:\n  - kind: svn\n", "sources.0: Input tag 'svn'"),
        ("sources:\n  - kind: github\n", "sources.0.github.owner: Field required"),
        (
            "sources:\n  - kind: filesystem\n    roots: [/x]\ncleanup:\n  max_delete_fraction: 2\n",
            "cleanup.max_delete_fraction: Input should be less than or equal to 1",
        ),
        (
            "sources:\n  - kind: filesystem\n    roots: [/x]\n    folow_symlinks: true\n",
            "sources.0.filesystem.folow_symlinks: Extra inputs are not permitted",
        ),
        ("- just a list\n", "the top level must be a mapping"),
        ("sources: [\n", "invalid YAML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert expected in str(err.value) and str(path) in str(err.value)


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(str(tmp_path / "missing.yaml"))


def test_nothing_configured(monkeypatch):
    monkeypatch.delenv("ENUM_PIPELINE_CONFIG", raising=False)
    monkeypatch.delenv("ENUM_PIPELINE_ROOTS", raising=False)
    with pytest.raises(ConfigError, match="no sources configured"):
        load_config()
