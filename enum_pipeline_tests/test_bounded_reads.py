"""No metadata read can hang or exhaust memory (issue 19, part 4): a FIFO where a git file or a
marker is expected is never opened, and a file over its bound is not read and recorded as the
project's error, while the scan goes on and finds the other repositories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from enum_pipeline.sources import gitmeta
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.sources.gitmeta import RefusedFile, read_git_meta, read_small
from enum_pipeline_tests.fake_codehosts import scan
from enum_pipeline_tests.helpers import git, make_repo

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="git not installed"),
    pytest.mark.timeout(60),
]


def _fifo(path: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root with three healthy repositories and one (``bad``) to plant a FIFO in."""
    root = tmp_path / "src"
    for name in ("one", "two", "group/three"):
        make_repo(root / name)
    return root, make_repo(root / "bad", remote="https://example.com/o/bad.git")


def _scan_root(root: Path) -> dict[str, object]:
    records, [verdict] = scan(FilesystemSource([str(root)]))
    assert verdict.complete, verdict.reason
    by_name = {r.name: r for r in records}
    assert {"one", "two", "three", "bad"} <= set(by_name)
    for name in ("one", "two", "three"):
        assert "error" not in by_name[name].attributes
        assert by_name[name].head_commit
    return by_name


@pytest.mark.parametrize("where", [".git/HEAD", ".git/config", "LICENSE"])
def test_a_fifo_in_place_of_a_git_file_or_marker_is_never_opened(tmp_path, where):
    root, bad = _tree(tmp_path)
    _fifo(bad / where)
    rec = _scan_root(root)["bad"]
    if where == "LICENSE":  # a marker is named by its entry, never opened
        assert "LICENSE*" in rec.markers and "error" not in rec.attributes
    else:
        name = where.rsplit("/", 1)[-1]
        assert f"a FIFO, not a regular file: not opened: {name}" in rec.attributes["error"]


def test_a_fifo_in_place_of_packed_refs_is_never_opened(tmp_path):
    root, bad = _tree(tmp_path)
    git(bad, "pack-refs", "--all")
    assert not (bad / ".git/refs/heads/main").exists()
    _fifo(bad / ".git/packed-refs")
    rec = _scan_root(root)["bad"]
    assert rec.head_commit is None
    assert "HEAD: a FIFO, not a regular file: not opened: packed-refs" in rec.attributes["error"]


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_dotgit_itself_not_a_regular_file(tmp_path, kind):
    root, bad = _tree(tmp_path)
    shutil.rmtree(bad / ".git")
    if kind == "fifo":
        os.mkfifo(bad / ".git")
    else:
        import socket

        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(bad / ".git"))
        except OSError as exc:  # path too long for AF_UNIX on this machine
            pytest.skip(str(exc))
        sock.close()
    rec = _scan_root(root)["bad"]
    assert rec.vcs == "git" and rec.head_commit is None
    assert "gitdir: a " in rec.attributes["error"] and "not opened: .git" in rec.attributes["error"]


def test_a_fifo_in_a_worktree_gitdir_and_hg_files(tmp_path):
    root, _ = _tree(tmp_path)
    main = root / "two"
    git(main, "worktree", "add", "-q", str(root / "wt"), "-b", "side")
    _fifo(main / ".git/worktrees/wt/HEAD")
    hg = root / "hgproj"
    (hg / ".hg").mkdir(parents=True)
    _fifo(hg / ".hg/hgrc")
    _fifo(hg / ".hg/branch")
    by_name = _scan_root(root)
    assert "HEAD: a FIFO" in by_name["wt"].attributes["error"]
    assert by_name["hgproj"].vcs == "hg" and "a FIFO" in by_name["hgproj"].attributes["error"]


def test_a_fifo_in_the_object_store_is_never_handed_to_dulwich(tmp_path):
    """A shared clone finds its HEAD commit through ``info/alternates`` (the dulwich fallback);
    a FIFO among the files dulwich could open stops it before it opens anything."""
    root, _ = _tree(tmp_path)
    git(root, "clone", "-q", "--shared", str(root / "one"), "shared")
    clone = root / "shared"
    assert (clone / ".git/objects/info/alternates").exists()
    healthy = read_git_meta(str(clone / ".git"), is_dir=True)
    assert healthy.errors == [] and healthy.last_commit_at is not None  # dulwich read it
    _fifo(clone / ".git/objects/info/commit-graph")
    rec = _scan_root(root)["shared"]
    assert "HEAD commit: a FIFO, not a regular file: not opened" in rec.attributes["error"]
    # a FIFO where the fast path looks (a pack index) is refused there too
    (clone / ".git/objects/info/commit-graph").unlink()
    _fifo(clone / ".git/objects/pack/pack-0000.idx")
    rec = _scan_root(root)["shared"]
    assert "HEAD commit: a FIFO" in rec.attributes["error"]


def test_an_oversize_config_is_not_read_and_recorded(tmp_path):
    root, bad = _tree(tmp_path)
    with open(bad / ".git/config", "a") as fh:
        fh.write("# padding\n" * (gitmeta.MAX_CONFIG_FILE // 10 + 1))
    rec = _scan_root(root)["bad"]
    assert rec.remote_url is None and rec.head_commit  # HEAD still read
    error = rec.attributes["error"]
    assert error.startswith("config: larger than the 4 MiB bound (") and error.endswith(": config")


def test_read_small_bounds(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 70_000)
    assert read_small(str(path), 70_000) == b"x" * 70_000
    for limit in (100, 65_536, 69_999):
        with pytest.raises(RefusedFile, match="larger than the"):
            read_small(str(path), limit)
    with pytest.raises(IsADirectoryError):
        read_small(str(tmp_path))
    os.mkfifo(tmp_path / "p")
    with pytest.raises(RefusedFile, match="a FIFO"):
        read_small(str(tmp_path / "p"))
    if os.path.exists("/dev/null"):  # a character device: refused before it is opened
        with pytest.raises(RefusedFile, match="a character device"):
            read_small("/dev/null")
