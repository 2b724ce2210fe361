"""Git metadata read from files (enum_pipeline.sources.gitmeta), checked against real ``git``."""

from __future__ import annotations

import shutil
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enum_pipeline.sources import gitmeta, gitobjects
from enum_pipeline.sources.gitmeta import (
    commit_time,
    parse_git_config,
    pick_remote,
    read_git_meta,
    read_ref,
    remote_urls,
    resolve_git_dir,
)
from enum_pipeline_tests.helpers import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _repo(tmp_path: Path, name: str = "repo", commits: int = 2, **init: str) -> Path:
    repo = tmp_path / name
    git(tmp_path, "init", "-q", *[f"--{k.replace('_', '-')}={v}" for k, v in init.items()], name)
    for i in range(commits):
        (repo / f"f{i}.txt").write_text(f"{i}\n")
        git(repo, "add", ".")
        git(
            repo,
            "commit",
            "-q",
            "-m",
            f"c{i}",
            env={"GIT_COMMITTER_DATE": f"@{1_600_000_000 + i * 3600} +0530"},
        )
    return repo


def _ct(repo: Path) -> datetime:
    return datetime.fromtimestamp(int(git(repo, "log", "-1", "--format=%ct")), tz=UTC)


# ------------------------------------------------------------------------------ real repos


def test_normal_repo(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    git(repo, "remote", "add", "origin", "https://user:FAKEPW@example.com/o/r.git")
    meta = read_git_meta(str(repo / ".git"), is_dir=True)
    assert meta.errors == []
    assert meta.branch == "main"
    assert meta.head_commit == git(repo, "rev-parse", "HEAD")
    assert meta.last_commit_at == _ct(repo)
    assert meta.last_commit_at.tzinfo is not None
    assert meta.last_commit_at.utcoffset().total_seconds() == 0
    assert meta.remote_name == "origin"
    assert meta.remote_url == "https://***@example.com/o/r.git"
    assert not (meta.detached or meta.unborn or meta.worktree or meta.bare)


def test_packed_refs_and_packed_objects(tmp_path: Path) -> None:
    repo = _repo(tmp_path, commits=3)
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    meta = read_git_meta(str(repo / ".git"), is_dir=True)
    assert meta.head_commit == git(repo, "rev-parse", "HEAD")
    git(repo, "gc", "-q")
    head = meta.head_commit
    assert head is not None
    assert not (repo / ".git/objects" / head[:2] / head[2:]).exists()
    meta = read_git_meta(str(repo / ".git"), is_dir=True)
    assert meta.errors == []
    assert meta.head_commit == head
    assert meta.last_commit_at == _ct(repo)


def test_packed_commit_read_by_dulwich_fallback(tmp_path: Path, monkeypatch) -> None:
    repo = _repo(tmp_path)
    git(repo, "gc", "-q")

    def refuse(objects_dir: str, sha: str) -> None:
        raise gitmeta._NeedFallback("forced")

    monkeypatch.setattr(gitobjects, "_packed_commit_time", refuse)
    meta = read_git_meta(str(repo / ".git"), is_dir=True)
    assert meta.errors == []
    assert meta.last_commit_at == _ct(repo)


def test_large_pack_index_is_memory_mapped(tmp_path: Path, monkeypatch) -> None:
    repo = _repo(tmp_path, commits=1)
    for i in range(200):  # a pack with many objects, so the binary search does some work
        (repo / f"b{i}.txt").write_text(f"{i}\n" * 3)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "many")
    git(repo, "gc", "-q")
    for threshold in (1 << 20, 0):  # read whole, then memory-mapped
        monkeypatch.setattr(gitobjects, "_IDX_READ_WHOLE", threshold)
        meta = read_git_meta(str(repo / ".git"), is_dir=True)
        assert meta.errors == []
        assert meta.last_commit_at == _ct(repo)


def test_detached_head(tmp_path: Path) -> None:
    repo = _repo(tmp_path, commits=2)
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", "--detach", first)
    meta = read_git_meta(str(repo / ".git"))
    assert meta.detached and meta.branch is None
    assert meta.head_commit == first
    assert meta.last_commit_at == datetime.fromtimestamp(1_600_000_000, tz=UTC)


def test_unborn_head(tmp_path: Path) -> None:
    repo = _repo(tmp_path, commits=0)
    meta = read_git_meta(str(repo / ".git"))
    assert meta.unborn and meta.branch == "main"
    assert meta.head_commit is None and meta.last_commit_at is None
    assert meta.errors == []


def test_linked_worktree(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    git(repo, "branch", "feature")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "feature")
    git(repo, "pack-refs", "--all")  # refs now only in the common dir's packed-refs
    git_dir, common, linked = resolve_git_dir(str(tmp_path / "wt" / ".git"))
    assert linked and Path(common) == repo / ".git"
    meta = read_git_meta(str(tmp_path / "wt" / ".git"))
    assert meta.worktree and meta.branch == "feature"
    assert meta.head_commit == git(repo, "rev-parse", "feature")
    assert meta.last_commit_at == _ct(repo)


def test_bare_repo(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    git(tmp_path, "clone", "-q", "--bare", str(repo), "bare.git")
    meta = read_git_meta(str(tmp_path / "bare.git"), bare=True)
    assert meta.errors == []
    assert meta.bare and meta.branch == "main"
    assert meta.head_commit == git(repo, "rev-parse", "HEAD")
    assert meta.remote_url == str(repo)  # git clone --bare records the origin


def test_sha256_repository(tmp_path: Path) -> None:
    repo = _repo(tmp_path, object_format="sha256")
    meta = read_git_meta(str(repo / ".git"))
    assert meta.head_commit is not None and len(meta.head_commit) == 64
    assert meta.last_commit_at == _ct(repo)
    git(repo, "gc", "-q")
    meta = read_git_meta(str(repo / ".git"))
    assert meta.errors == []
    assert meta.last_commit_at == _ct(repo)


# ------------------------------------------------------------------------------ config


CONFIG = rb"""
# comment
[core]
	bare = false
	filemode
[remote "upstream"]
	url = https://example.com/up/stream.git   ; trailing comment
[Remote "origin"]
	URL = "git@example.com:o/r.git"
	pushurl = ignored
[remote.old]
	url = old-style
[remote "sp\"ace"] url = https://example.com/a\
b
[broken
	url = never
[alias]
	lg = "log --oneline # not a comment"  # a comment
	esc = a\tb\\c
"""


def test_parse_git_config() -> None:
    entries = list(parse_git_config(CONFIG))
    assert ("core", None, "bare", "false") in entries
    assert ("core", None, "filemode", None) in entries
    assert ("remote", "upstream", "url", "https://example.com/up/stream.git") in entries
    assert ("remote", "origin", "url", "git@example.com:o/r.git") in entries
    assert ("remote", "old", "url", "old-style") in entries
    assert ("remote", 'sp"ace', "url", "https://example.com/ab") in entries
    assert ("alias", None, "lg", "log --oneline # not a comment") in entries
    assert ("alias", None, "esc", "a\tb\\c") in entries
    assert all(value != "never" for *_, value in entries)


def test_remote_urls_order_and_pick() -> None:
    urls = remote_urls(CONFIG)
    assert list(urls)[:2] == ["upstream", "origin"]
    assert pick_remote(urls) == ("origin", "git@example.com:o/r.git")
    assert pick_remote(remote_urls(b'[remote "a"]\n\turl = x\n[remote "b"]\n\turl = y\n')) == (
        "a",
        "x",
    )
    assert pick_remote({}) is None
    assert remote_urls(b"[core]\n\tbare = true\n") == {}


@pytest.mark.parametrize(
    "data",
    [
        b'[remote "origin"]\n\turl = https://h/o/r.git\n\tfetch = +refs/heads/*:refs/x/*\n',
        b'[remote "origin"]\n\tfetch = x\n[branch "main"]\n\tremote = origin\n',
        b'[remote "a"]\n\turl = u1\n\turl = u2\n[remote "b"]\n\turl=u3\n',
        b'[remote "a"] url = inline\n',
        b'[remote "a"]\r\n\turl = crlf\r\n',
        b'[ remote "a" ]\n\turl = spaced\n',
        b'[remote "a"]\n\turl = "quoted value"\n',
        b'[remote "a"]\n# [remote "b"]\n\turl = after-comment\n',
        b'[remote "a"]\n\turl = a;b\n',
        b'[submodule "s"]\n\turl = sub\n[remote "a"]\n\tpushurl = p\n',
    ],
)
def test_fast_config_path_agrees_with_full_parser(data: bytes) -> None:
    full: dict[str, str] = {}
    for section, sub, key, value in parse_git_config(data):
        if section == "remote" and key == "url" and sub is not None and value:
            full.setdefault(sub, value)
    assert remote_urls(data) == full


def test_one_config_reader_for_every_caller() -> None:
    """The section filter only skips, undecodable bytes stay ``\\xNN`` whatever the layout, and
    section names are case-insensitive for each caller."""
    from enum_pipeline.sources.gitmeta import branch_upstream, remotes_and_upstream

    for data in (CONFIG, CONFIG.replace(b"old-style", b"old-\xffstyle")):
        every = list(parse_git_config(data))
        assert list(parse_git_config(data, {"remote"})) == [e for e in every if e[0] == "remote"]
    for data in (b'[remote "o"]\n\turl = u\xff\n', b'[remote "o"]\n\turl = "u\xff" # q\n'):
        assert remote_urls(data) == {"o": "u\\xff"}
    upper = b'[REMOTE "o"]\n\turl = u\n[BRANCH "main"]\n\tremote = o\n\tmerge = refs/heads/m\n'
    assert remotes_and_upstream(upper, "main") == ({"o": "u"}, ("o", "refs/heads/m"))
    assert branch_upstream(upper, "main") == ("o", "refs/heads/m")


# ------------------------------------------------------------------------------ robustness


def test_malformed_files_never_raise(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    dotgit = repo / ".git"
    head = git(repo, "rev-parse", "HEAD")

    (dotgit / "HEAD").write_bytes(b"\xff\xfe garbage\x00")
    meta = read_git_meta(str(dotgit))
    assert meta.head_commit is None and meta.errors

    (dotgit / "HEAD").write_text("ref: ../../../../etc/passwd\n")
    meta = read_git_meta(str(dotgit))
    assert meta.head_commit is None and any("invalid ref" in e for e in meta.errors)

    (dotgit / "HEAD").write_text("ref: refs/heads/loop\n")
    (dotgit / "refs/heads/loop").write_text("ref: refs/heads/loop\n")
    meta = read_git_meta(str(dotgit))
    assert any("loop" in e for e in meta.errors)

    (dotgit / "HEAD").write_text("ref: refs/heads/main\n")
    (dotgit / "refs/heads/main").write_text("not a sha\n")
    assert read_git_meta(str(dotgit)).errors

    (dotgit / "refs/heads/main").write_text(head + "\n")
    obj = dotgit / "objects" / head[:2] / head[2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes()[:10])  # truncated zlib stream
    meta = read_git_meta(str(dotgit))
    assert meta.head_commit == head and meta.last_commit_at is None
    assert any("HEAD commit" in e for e in meta.errors)

    obj.write_bytes(zlib.compress(b"blob 3\x00abc"))
    assert any("not a commit" in e for e in read_git_meta(str(dotgit)).errors)

    obj.write_bytes(zlib.compress(b"commit 20\x00tree x\n\nno committer"))
    assert any("committer" in e for e in read_git_meta(str(dotgit)).errors)

    obj.unlink()
    assert any("not found" in e for e in read_git_meta(str(dotgit)).errors)

    (dotgit / "config").unlink()
    (dotgit / "config").mkdir()
    meta = read_git_meta(str(dotgit))
    assert any(e.startswith("config") for e in meta.errors)


def test_corrupt_pack_index(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    git(repo, "gc", "-q")
    pack = repo / ".git/objects/pack"
    for idx in pack.glob("*.idx"):
        idx.chmod(0o644)
        idx.write_bytes(b"\xfftOc\x00\x00\x00\x02" + b"\xff" * 1100)
    meta = read_git_meta(str(repo / ".git"))
    assert meta.head_commit is not None
    assert meta.last_commit_at is None and meta.errors


def test_gitdir_file_errors(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text("nonsense\n")
    assert read_git_meta(str(wt / ".git")).errors
    (wt / ".git").write_text("gitdir: ../does-not-exist\n")
    meta = read_git_meta(str(wt / ".git"))
    assert meta.errors and meta.head_commit is None


def test_read_ref_per_worktree_and_pseudo_refs(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    d = str(repo / ".git")
    head = git(repo, "rev-parse", "HEAD")
    assert read_ref(d, d, "refs/heads/main") == head
    assert read_ref(d, d, "refs/heads/nope") is None
    (repo / ".git/ORIG_HEAD").write_text(head + "\n")
    assert read_ref(d, d, "ORIG_HEAD") == head


def test_commit_time_missing_object(tmp_path: Path) -> None:
    repo = _repo(tmp_path, commits=1)
    assert commit_time(str(repo / ".git/objects"), "0" * 40) is None
