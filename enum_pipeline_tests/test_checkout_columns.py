"""The product columns of a local checkout, each read from the .git files of a real ``git``
clone and compared with what ``git`` itself says."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.fields import PRODUCT_COLUMNS
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.sources.gitmeta import branch_upstream, parse_git_config
from enum_pipeline.sources.kinds import FILLED_COLUMNS
from enum_pipeline_tests.conftest import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _records(root: Path) -> dict[str, ProjectRecord]:
    items = FilesystemSource([str(root)]).scan()
    return {i.name: i for i in items if isinstance(i, ProjectRecord)}


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A repository with ``trunk`` (its HEAD) and ``feature``, three commits on trunk."""
    up = tmp_path / "upstream"
    up.mkdir()
    git(up, "init", "-q", "-b", "trunk")
    for i in range(3):
        (up / f"f{i}").write_text(f"{i}\n")
        git(up, "add", ".")
        git(up, "commit", "-q", "-m", f"c{i}")
    git(up, "branch", "feature")
    return up


def test_clone_with_origin_head_and_another_branch(tmp_path: Path, upstream: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    git(root, "clone", "-q", str(upstream), "app")
    app = root / "app"
    git(app, "checkout", "-q", "feature")
    git(app, "fetch", "-q", "origin")  # a clone writes no FETCH_HEAD; a fetch does
    git(app, "remote", "add", "mirror", "https://user:s3cret-not-real@example.com/m/app.git")
    (app / "LICENSE.txt").write_text("MIT\n")
    (app / ".github").mkdir()
    (app / ".github" / "CODEOWNERS").write_text("* @acme/platform\n")
    (app / "catalog-info.yaml").write_text("apiVersion: backstage.io/v1alpha1\n")

    rec = _records(root)["app"]
    assert git(app, "symbolic-ref", "refs/remotes/origin/HEAD") == "refs/remotes/origin/trunk"
    assert rec.default_branch == "trunk"  # the remote's HEAD, not what is checked out
    assert rec.current_branch == "feature"
    assert rec.upstream == "origin/feature" and rec.in_sync is True
    assert rec.remotes == {
        "origin": str(upstream),
        "mirror": "https://***@example.com/m/app.git",
    }
    assert rec.shallow is False and rec.has_stash is False
    fetch_head = (app / ".git" / "FETCH_HEAD").stat().st_mtime
    assert rec.last_fetch_at == datetime.fromtimestamp(int(fetch_head), tz=UTC)
    when = datetime.fromtimestamp(int(git(app, "log", "-1", "--format=%ct")), tz=UTC)
    assert rec.last_activity_at == rec.last_commit_at == when
    assert {"LICENSE*", ".github/CODEOWNERS", "catalog-info.yaml"} <= set(rec.markers)
    # code-host facts stay unknown for a checkout, never guessed
    for column in ("archived", "fork", "visibility", "description", "topics", "language"):
        assert getattr(rec, column) is None, column
    for column in ("license", "stars", "created_at"):
        assert getattr(rec, column) is None, column
    filled = FILLED_COLUMNS["filesystem"]
    for column in PRODUCT_COLUMNS:
        assert (getattr(rec, column) is not None) == (column in filled), column


def test_ahead_of_upstream_packed_refs_and_stash(tmp_path: Path, upstream: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    git(root, "clone", "-q", str(upstream), "app")
    app = root / "app"
    (app / "new").write_text("x\n")
    git(app, "add", "new")
    git(app, "commit", "-q", "-m", "local work")
    (app / "f0").write_text("changed\n")
    git(app, "stash", "-q")
    git(app, "pack-refs", "--all")  # the upstream ref and refs/stash now live in packed-refs
    assert not (app / ".git" / "refs" / "remotes" / "origin" / "trunk").exists()

    rec = _records(root)["app"]
    assert git(app, "rev-list", "--count", "origin/trunk..trunk") == "1"
    assert rec.current_branch == "trunk" and rec.upstream == "origin/trunk"
    assert rec.in_sync is False
    assert rec.has_stash is True
    assert rec.default_branch == "trunk"

    git(app, "stash", "drop", "-q")
    git(app, "reset", "-q", "--hard", "origin/trunk")
    rec = _records(root)["app"]
    assert rec.in_sync is True and rec.has_stash is False


def test_shallow_clone_and_no_upstream(tmp_path: Path, upstream: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    git(root, "clone", "-q", "--depth", "1", f"file://{upstream}", "thin")
    git(root, "init", "-q", "lonely")
    (root / "lonely" / "a").write_text("a\n")
    git(root / "lonely", "add", "a")
    git(root / "lonely", "commit", "-q", "-m", "a")
    (root / "lonely" / "CODEOWNERS").write_text("* @me\n")
    (root / "lonely" / "docs").mkdir()
    (root / "lonely" / "docs" / "CODEOWNERS").write_text("* @me\n")

    recs = _records(root)
    thin, lonely = recs["thin"], recs["lonely"]
    assert git(root / "thin", "rev-parse", "--is-shallow-repository") == "true"
    assert thin.shallow is True and thin.in_sync is True and thin.upstream == "origin/trunk"
    assert lonely.shallow is False
    # no remote, no upstream, never fetched: unknown, not "out of sync"
    assert lonely.remotes is None and lonely.upstream is None and lonely.in_sync is None
    assert lonely.default_branch is None and lonely.current_branch == "main"
    assert lonely.last_fetch_at is None
    assert {"CODEOWNERS", "docs/CODEOWNERS"} <= set(lonely.markers)
    assert "LICENSE*" not in lonely.markers


def test_bare_repository_head_is_its_default_branch(tmp_path: Path, upstream: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    git(root, "clone", "-q", "--bare", str(upstream), "app.git")
    rec = _records(root)["app.git"]
    assert rec.default_branch == "trunk" and rec.current_branch is None
    assert rec.in_sync is None and rec.has_stash is None and rec.upstream is None


@pytest.mark.parametrize(
    "config",
    [
        b'[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n',
        b'[core]\n\tbare = false\n[remote "origin"]\n\turl = x\n'
        b'[branch "main"]\n\tremote = up\n\tmerge = refs/heads/dev\n[branch "x"]\n\tremote = o\n',
        b'[branch "main"] remote = origin\n\tmerge = refs/heads/main\n',  # key on the header line
        b"[branch.main]\n\tremote = origin\n\tmerge = refs/heads/main\n",  # old-style subsection
        b'[branch "main"]\n\tremote = "or\\"igin"\n\tmerge = refs/heads/main # note\n',
        b'[branch "main"]\n\tremote = a\n\tremote = b\n\tmerge = m\n',  # the last value wins
        b'[branch "main"]\n\tremote = origin\n',  # no merge: no upstream
        b'[branch "other"]\n\tremote = origin\n\tmerge = refs/heads/main\n',
        b'[Branch "main"]\n\tRemote = origin\n\tMERGE = refs/heads/main\n',  # case-insensitive
        b'\t[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n',  # indented
        b'[remote "branch"]\n\turl = x\n[branch "main"]\n\tremote = branch\n\tmerge = m\n',
        b'[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n[branch "main"]\n'
        b"\tmerge = refs/heads/other\n",  # a repeated section
    ],
)
def test_branch_upstream_agrees_with_the_config_parser(config: bytes) -> None:
    want: dict[str, str] = {}
    for section, sub, key, value in parse_git_config(config):
        if section == "branch" and sub == "main" and key in ("remote", "merge") and value:
            want[key] = value
    expected = (want["remote"], want["merge"]) if len(want) == 2 else None
    assert branch_upstream(config, "main") == expected


def test_branch_upstream_matches_git(tmp_path: Path, upstream: Path) -> None:
    git(tmp_path, "clone", "-q", str(upstream), "c")
    config = (tmp_path / "c" / ".git" / "config").read_bytes()
    merge = git(tmp_path / "c", "config", "branch.trunk.merge")
    assert branch_upstream(config, "trunk") == ("origin", merge)
    assert os.path.basename(merge) == "trunk"
