"""A small real inventory for the product tests: real git checkouts whose remotes point at a
fake GitHub organisation (one repository cloned twice, one not cloned, one checkout outside the
organisation), and the configuration file that reads both."""

from __future__ import annotations

from pathlib import Path

import yaml

from enum_pipeline_tests.conftest import git, make_repo
from enum_pipeline_tests.fake_codehosts import GitHubApp

ORG = "Acme"


def github_app() -> GitHubApp:
    """``Acme`` with Repo-0000 (Python, cloned twice), Repo-0001 (cloned once) and an archived
    Go repository ``old-tool`` with topic ``infra`` that nobody cloned."""
    app = GitHubApp()
    app.add_owner(ORG, 2)
    app.add_repo(ORG, "old-tool", archived=True, language="Go", topics=["infra"])
    for repo in app.owners[ORG.lower()].repos:
        repo.update(private=False, visibility="public")  # all listed to an anonymous reader
    return app


def make_tree(root: Path) -> Path:
    """The checkouts under ``root/src``."""
    src = root / "src"
    make_repo(src / "app", remote=f"https://github.com/{ORG}/Repo-0000.git")
    make_repo(src / "copies" / "app-again", remote=f"git@github.com:{ORG.lower()}/repo-0000.git")
    make_repo(src / "lib", remote=f"https://github.com/{ORG}/Repo-0001.git")
    make_repo(src / "elsewhere", remote="https://github.com/someone-else/thing.git")
    make_repo(src / "local-only")
    (src / "app" / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    git(src / "app", "checkout", "-q", "-b", "feature")
    return src


def write_config(root: Path, src: Path, api_url: str) -> Path:
    """A configuration reading ``src`` and the fake organisation (anonymously)."""
    path = root / "enum_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"kind": "filesystem", "roots": [str(src)]},
                    {"kind": "github", "owner": ORG, "base_url": api_url, "token_env": None},
                ]
            }
        )
    )
    return path
