"""FilesystemSource against real ``git`` repositories and hostile folder trees."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enum_pipeline.sources import filesystem, fsprojects
from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.filesystem import (
    DEFAULT_SKIP_NAMES,
    FilesystemSource,
    escape_path,
    unescape_path,
)
from enum_pipeline_tests.conftest import git


def _repo(parent: Path, name: str, commits: int = 1) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    git(parent, "init", "-q", name)
    repo = parent / name
    for i in range(commits):
        (repo / f"f{i}.txt").write_text(f"{i}\n")
        git(repo, "add", ".")
        git(
            repo, "commit", "-q", "-m", f"c{i}", env={"GIT_COMMITTER_DATE": f"@{1_650_000_000 + i}"}
        )
    return repo


def _ct(repo: Path) -> datetime:
    return datetime.fromtimestamp(int(git(repo, "log", "-1", "--format=%ct")), tz=UTC)


def _scan(*roots: Path | str, **kw) -> tuple[dict[str, ProjectRecord], list[ScopeVerdict]]:
    items = list(FilesystemSource([str(r) for r in roots], **kw).scan())
    records = [i for i in items if isinstance(i, ProjectRecord)]
    verdicts = [i for i in items if isinstance(i, ScopeVerdict)]
    assert isinstance(items[-1], ScopeVerdict)
    by_loc = {r.location: r for r in records}
    assert len(by_loc) == len(records)
    assert len({r.project_key for r in records}) == len(records)
    for r in records:  # everything must be storable as UTF-8 text
        for value in (r.project_key, r.scope_key, r.name, r.location, r.path, r.remote_url):
            if value is not None:
                value.encode("utf-8")
                assert "\x00" not in value
    return by_loc, verdicts


# ---------------------------------------------------------------------------------- git cases


def test_normal_repo_record(tmp_path: Path) -> None:
    root = tmp_path / "root"
    repo = _repo(root / "group", "proj", commits=2)
    for marker in ("pyproject.toml", "package.json", "App.csproj", "Makefile"):
        (repo / marker).write_text("\n")
    git(repo, "remote", "add", "origin", "git@github.com:acme/proj.git")
    records, verdicts = _scan(root)
    rec = records[str(repo)]
    assert rec.project_key == f"fs:{os.path.realpath(repo)}"
    assert rec.scope_key == f"fs:{root}"
    assert rec.source_kind == "filesystem" and rec.vcs == "git"
    assert rec.name == "proj" and rec.path == rec.location == str(repo)
    assert rec.location.startswith(str(root) + "/")
    assert rec.current_branch == "main" and rec.default_branch is None
    assert rec.head_commit == git(repo, "rev-parse", "HEAD")
    assert rec.last_commit_at == _ct(repo)
    assert rec.remote_url == "git@github.com:acme/proj.git"
    assert rec.normalized_remote == "github.com/acme/proj"
    assert rec.markers == ("*.csproj", "Makefile", "package.json", "pyproject.toml")
    # the device it lives on and that device's mount point: what a later look at its path needs
    mount = os.path.realpath(repo)
    while mount != "/" and os.stat(os.path.dirname(mount)).st_dev == os.stat(repo).st_dev:
        mount = os.path.dirname(mount)
    assert rec.attributes == {
        "bare": False,
        "detached": False,
        "unborn": False,
        "worktree": False,
        "device": os.stat(repo).st_dev,
        "mount_point": mount,
    }
    [verdict] = verdicts
    assert verdict.complete and verdict.seen == 1 and verdict.protected == ()
    assert verdict.scope_key == f"fs:{root}"
    assert verdict.identity == {"real_path": os.path.realpath(root), "st_dev": os.stat(root).st_dev}
    assert verdict.coverage == {
        "skip_names": sorted(DEFAULT_SKIP_NAMES),
        "max_depth": None,
        "nested": True,
        "one_file_system": True,
        "follow_symlinks": False,
    }
    assert verdict.protected_reasons == {}


def test_packed_refs_and_gc(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "root", "proj", commits=3)
    git(repo, "pack-refs", "--all")
    rec = _scan(tmp_path / "root")[0][str(repo)]
    assert rec.head_commit == git(repo, "rev-parse", "HEAD")
    git(repo, "gc", "-q")
    rec = _scan(tmp_path / "root")[0][str(repo)]
    assert rec.head_commit == git(repo, "rev-parse", "HEAD")
    assert rec.last_commit_at == _ct(repo)
    assert "error" not in rec.attributes


def test_detached_and_unborn(tmp_path: Path) -> None:
    root = tmp_path / "root"
    det = _repo(root, "det", commits=2)
    git(det, "checkout", "-q", "--detach", "HEAD~1")
    git(root, "init", "-q", "fresh")
    records, _ = _scan(root)
    d = records[str(det)]
    assert d.attributes["detached"] and d.current_branch is None
    assert d.head_commit == git(det, "rev-parse", "HEAD")
    assert d.last_commit_at == _ct(det)
    u = records[str(root / "fresh")]
    assert u.attributes["unborn"] and u.current_branch == "main"
    assert u.head_commit is None and u.last_commit_at is None
    assert "error" not in u.attributes


def test_worktrees(tmp_path: Path) -> None:
    root = tmp_path / "root"
    repo = _repo(root, "main-repo")
    git(repo, "worktree", "add", "-q", "-b", "side", str(root / "side-wt"))
    git(repo, "worktree", "add", "-q", "-b", "inner", str(repo / "inner-wt"))
    records, _ = _scan(root)
    side = records[str(root / "side-wt")]
    assert side.attributes["worktree"] and side.current_branch == "side"
    assert side.head_commit == git(repo, "rev-parse", "side")
    assert side.last_commit_at == _ct(repo)
    assert "nested_in" not in side.attributes
    inner = records[str(repo / "inner-wt")]
    assert inner.attributes["worktree"]
    assert inner.attributes["nested_in"] == records[str(repo)].project_key


def test_submodule_and_vendored_clone_are_nested(tmp_path: Path) -> None:
    upstream = _repo(tmp_path / "elsewhere", "lib")
    root = tmp_path / "root"
    app = _repo(root, "app")
    git(app, "submodule", "add", "-q", str(upstream), "deps/lib")
    git(app, "commit", "-q", "-m", "add submodule")
    (app / "third_party").mkdir()
    git(app / "third_party", "clone", "-q", str(upstream), "vendored")
    records, verdicts = _scan(root)
    parent = records[str(app)].project_key
    sub = records[str(app / "deps" / "lib")]
    assert sub.attributes["nested_in"] == parent
    assert sub.head_commit == git(upstream, "rev-parse", "HEAD")
    assert sub.remote_url == str(upstream)
    vendored = records[str(app / "third_party" / "vendored")]
    assert vendored.attributes["nested_in"] == parent
    assert verdicts[0].seen == 3
    # without nested search only the top-level project is found
    records, _ = _scan(root, nested=False)
    assert list(records) == [str(app)]


def test_bare_repo(tmp_path: Path) -> None:
    src = _repo(tmp_path / "src", "proj")
    root = tmp_path / "root"
    root.mkdir()
    git(root, "clone", "-q", "--bare", str(src), "proj.git")
    records, _ = _scan(root)
    rec = records[str(root / "proj.git")]
    assert rec.vcs == "git" and rec.attributes["bare"]
    assert rec.head_commit == git(src, "rev-parse", "HEAD")
    assert rec.last_commit_at == _ct(src)
    assert rec.name == "proj.git"
    assert len(records) == 1  # nothing inside the bare repo is walked


def test_broken_repo_is_recorded_and_scan_continues(tmp_path: Path) -> None:
    root = tmp_path / "root"
    broken = _repo(root, "broken")
    good = _repo(root, "good")
    (broken / ".git" / "HEAD").write_bytes(b"\x00\xffnot a head")
    (broken / ".git" / "config").write_bytes(b'[remote "origin"\n\turl = \x00\xfe')
    (root / "gitfile").mkdir()
    (root / "gitfile" / ".git").write_text("gitdir: /nonexistent/path\n")
    records, verdicts = _scan(root)
    assert "error" in records[str(broken)].attributes
    assert records[str(broken)].head_commit is None
    assert "error" in records[str(root / "gitfile")].attributes
    assert records[str(good)].head_commit is not None
    assert verdicts[0].complete and verdicts[0].seen == 3


def test_credentials_never_reach_the_record(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name, url, secret in [
        ("a", "https://user:token@host/x.git", "token"),
        ("b", "https://x-access-token:abc@github.com/o/r.git", "abc"),
        ("c", "https://oauth2:glpat-FAKE@gitlab.com/g/r.git", "glpat-FAKE"),
    ]:
        repo = _repo(root, name)
        git(repo, "remote", "add", "origin", url)
        rec = _scan(root)[0][str(repo)]
        assert secret not in repr(rec)
        assert rec.remote_url is not None and "***@" in rec.remote_url
    records = _scan(root)[0]
    assert records[str(root / "c")].normalized_remote == "gitlab.com/g/r"
    assert records[str(root / "b")].normalized_remote == "github.com/o/r"


def test_first_remote_when_no_origin(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "root", "p")
    git(repo, "remote", "add", "upstream", "https://example.com/up/p.git")
    git(repo, "remote", "add", "zfork", "https://example.com/fork/p.git")
    rec = _scan(tmp_path / "root")[0][str(repo)]
    assert rec.remote_url == "https://example.com/up/p.git"


# ------------------------------------------------------------------------------ other VCSes


def test_other_vcs_markers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name, marker, is_dir in [
        ("hgp", ".hg", True),
        ("svnp", ".svn", True),
        ("fos1", ".fslckout", False),
        ("fos2", "_FOSSIL_", False),
        ("jjp", ".jj", True),
    ]:
        (root / name).mkdir(parents=True)
        target = root / name / marker
        target.mkdir() if is_dir else target.write_text("")
    (root / "hgp" / ".hg" / "hgrc").write_text("[paths]\ndefault = https://u:FAKEPW@hg.example/r\n")
    (root / "hgp" / ".hg" / "branch").write_text("stable\n")
    # pre-1.7 svn: a .svn in every sub-folder of the same working copy
    (root / "svnp" / "sub" / ".svn").mkdir(parents=True)
    # an svn external (own wc.db) nested inside
    (root / "svnp" / "ext" / ".svn").mkdir(parents=True)
    (root / "svnp" / "ext" / ".svn" / "wc.db").write_text("")
    records, _ = _scan(root)
    assert {r.vcs for r in records.values()} == {"hg", "svn", "fossil", "jj"}
    assert records[str(root / "hgp")].remote_url == "https://***@hg.example/r"
    assert records[str(root / "hgp")].normalized_remote == "hg.example/r"
    assert records[str(root / "hgp")].current_branch == "stable"
    assert str(root / "svnp" / "sub") not in records
    assert records[str(root / "svnp" / "ext")].attributes["nested_in"] == (
        records[str(root / "svnp")].project_key
    )
    assert len(records) == 6


def test_colocated_jj_isgit(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "root", "p")
    (repo / ".jj").mkdir()
    rec = _scan(tmp_path / "root")[0][str(repo)]
    assert rec.vcs == "git" and rec.attributes["other_vcs"] == ["jj"]


# ------------------------------------------------------------------------ walking behaviour


def _fake_repo(path: Path) -> Path:
    """A minimal git dir written by hand (unborn HEAD): enough to be recognised."""
    (path / ".git" / "refs" / "heads").mkdir(parents=True)
    (path / ".git" / "objects").mkdir()
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return path


def test_skip_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "node_modules" / "dep")
    _fake_repo(root / ".venv" / "src" / "pkg")
    _fake_repo(root / "target" / "kept")
    _fake_repo(root / "build" / "kept")
    records, _ = _scan(root)
    assert set(records) == {str(root / "target" / "kept"), str(root / "build" / "kept")}
    assert "node_modules" in DEFAULT_SKIP_NAMES and "target" not in DEFAULT_SKIP_NAMES
    records, _ = _scan(root, skip_names=["build"])
    assert str(root / "build" / "kept") not in records
    assert str(root / "node_modules" / "dep") in records
    # a root is always entered, whatever its name
    records, _ = _scan(root / "node_modules")
    assert list(records) == [str(root / "node_modules" / "dep")]


def test_symlinks_not_followed_by_default(tmp_path: Path) -> None:
    outside = _fake_repo(tmp_path / "outside" / "proj")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    (outside.parent / "file.txt").write_text("x")
    (root / "file-link").symlink_to(outside.parent / "file.txt")
    records, verdicts = _scan(root)
    assert records == {} and verdicts[0].complete
    # the symlinked folder was not entered: what is below it is protected (the dangling one
    # and a symlinked file lead to no folder and are not)
    assert verdicts[0].protected == (str(root / "link"),)
    assert verdicts[0].protected_reasons == {str(root / "link"): "symlink not followed"}
    records, verdicts = _scan(root, follow_symlinks=True)
    assert verdicts[0].protected == ()
    rec = records[str(root / "link" / "proj")]
    assert rec.project_key == f"fs:{os.path.realpath(outside)}"
    assert rec.location.startswith(str(root) + "/")


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "a" / "proj")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b").mkdir()
    (root / "b" / "back").symlink_to(root / "a", target_is_directory=True)
    records, verdicts = _scan(root, follow_symlinks=True)
    assert len(records) == 1 and verdicts[0].complete and verdicts[0].seen == 1


def test_root_itself_may_be_a_symlink_and_a_project(tmp_path: Path) -> None:
    real = _fake_repo(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    src = FilesystemSource([str(link)])
    assert src.scope_keys() == [f"fs:{link}"]
    records, verdicts = _scan(link)
    assert records[str(link)].project_key == f"fs:{real}"
    assert verdicts[0].identity["real_path"] == str(real)


def test_scope_keys_are_absolute_and_normalised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    src = FilesystemSource(["r", "./r/../r/", str(tmp_path / "missing")])
    assert src.scope_keys() == [f"fs:{tmp_path}/r", f"fs:{tmp_path}/r", f"fs:{tmp_path}/missing"]
    assert src.kind == "filesystem"


def test_root_errors_make_incomplete_scopes(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    ok = tmp_path / "ok"
    _fake_repo(ok / "p")
    records, verdicts = _scan(tmp_path / "missing", tmp_path / "file", ok)
    assert [v.complete for v in verdicts] == [False, False, True]
    assert "does not exist" in (verdicts[0].reason or "")
    assert "not a directory" in (verdicts[1].reason or "")
    assert verdicts[0].seen == verdicts[1].seen == 0
    assert list(records) == [str(ok / "p")]


def _deny(monkeypatch, denied: set[str]) -> None:
    real_scandir = os.scandir

    def scandir(path=".", *a, **kw):
        if os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path, *a, **kw)

    monkeypatch.setattr(filesystem.os, "scandir", scandir)


def test_unreadable_root_is_incomplete(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "p")
    _deny(monkeypatch, {str(root)})
    records, [verdict] = _scan(root)
    assert records == {} and not verdict.complete
    assert "Permission denied" in (verdict.reason or "")


def test_unreadable_subfolder_is_protected(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "a" / "p1")
    _fake_repo(root / "locked" / "p2")
    _fake_repo(root / "z" / "p3")
    _deny(monkeypatch, {str(root / "locked")})
    records, [verdict] = _scan(root)
    assert set(records) == {str(root / "a" / "p1"), str(root / "z" / "p3")}
    assert verdict.complete and verdict.seen == 2
    assert verdict.protected == (str(root / "locked"),)
    assert verdict.protected_reasons == {str(root / "locked"): "unreadable: Permission denied"}
    assert str(root / "locked") in (verdict.reason or "")


def test_other_oserror_in_subfolder_is_protected(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "p")
    (root / "flaky").mkdir()
    real_scandir = os.scandir

    def scandir(path=".", *a, **kw):
        if os.fspath(path) == str(root / "flaky"):
            raise OSError(5, "Input/output error", os.fspath(path))
        return real_scandir(path, *a, **kw)

    monkeypatch.setattr(filesystem.os, "scandir", scandir)
    records, [verdict] = _scan(root)
    assert verdict.complete and verdict.protected == (str(root / "flaky"),)
    assert verdict.protected_reasons[str(root / "flaky")] == "unreadable: Input/output error"
    assert str(root / "p") in records


def test_unreadable_subfolder_real_permissions_as_nobody() -> None:
    """A child (dropped to uid/gid 65534 when we are root, who bypasses permissions) scans a
    folder holding a real mode-000 sub-folder."""
    import json
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="enum-fs-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "root"
        _fake_repo(root / "ok")
        locked = root / "locked"
        _fake_repo(locked / "p")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        locked.chmod(0)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                os.close(rfd)
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                items = list(FilesystemSource([str(root)]).scan())
                out = {
                    "records": [i.location for i in items if isinstance(i, ProjectRecord)],
                    "complete": items[-1].complete,
                    "protected": list(items[-1].protected),
                    "reasons": items[-1].protected_reasons,
                }
                os.write(wfd, json.dumps(out).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        out = json.loads(data)
        assert out["records"] == [str(root / "ok")]
        assert out["complete"] is True
        assert out["protected"] == [str(locked)]
        assert out["reasons"] == {str(locked): "unreadable: Permission denied"}
    finally:
        (base / "root" / "locked").chmod(0o755)
        shutil.rmtree(base)


def test_unexpected_error_makes_only_that_root_incomplete(tmp_path: Path, monkeypatch) -> None:
    _fake_repo(tmp_path / "r1" / "boom")
    _fake_repo(tmp_path / "r2" / "fine")
    real = filesystem.read_git_meta

    def exploding(dotgit: str, **kw):
        if "boom" in dotgit:
            raise RuntimeError("unforeseen")
        return real(dotgit, **kw)

    monkeypatch.setattr(fsprojects, "read_git_meta", exploding)
    records, verdicts = _scan(tmp_path / "r1", tmp_path / "r2")
    assert [v.complete for v in verdicts] == [False, True]
    assert "RuntimeError: unforeseen" in (verdicts[0].reason or "")
    assert list(records) == [str(tmp_path / "r2" / "fine")]


def test_max_depth(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "d1")
    _fake_repo(root / "x" / "d2")
    _fake_repo(root / "x" / "y" / "d3")
    assert set(_scan(root, max_depth=1)[0]) == {str(root / "d1")}
    assert len(_scan(root, max_depth=2)[0]) == 2
    assert len(_scan(root)[0]) == 3
    assert list(_scan(root / "d1", max_depth=0)[0]) == [str(root / "d1")]


def test_overlapping_roots_yield_each_project_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "inner" / "p")
    records, verdicts = _scan(root, root / "inner")
    assert len(records) == 1
    assert [v.seen for v in verdicts] == [1, 0]
    assert all(v.complete for v in verdicts)
    assert "earlier root" in (verdicts[1].reason or "")


def test_foreign_mount_points_are_skipped(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "local")
    _fake_repo(root / "mnt" / "remote")
    real_stat = os.stat
    dev = real_stat(root).st_dev
    mnt = str(root / "mnt")
    monkeypatch.setattr(filesystem, "_read_mount_points", lambda: [(mnt, "999:999")])

    def fake_stat(path, *a, **kw):
        result = real_stat(path, *a, **kw)
        if os.fspath(path) == mnt:
            return os.stat_result((*result[:2], dev + 1, *result[3:]))
        return result

    monkeypatch.setattr(filesystem.os, "stat", fake_stat)
    records, [verdict] = _scan(root)
    assert set(records) == {str(root / "local")}
    assert verdict.complete and verdict.protected == (mnt,)
    assert verdict.protected_reasons == {mnt: "foreign mount"}
    assert len(_scan(root, one_file_system=False)[0]) == 2


def test_foreign_mounts_without_mountinfo(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "local")
    _fake_repo(root / "mnt" / "remote")
    real_lstat = os.lstat
    mnt = str(root / "mnt")
    monkeypatch.setattr(filesystem, "_read_mount_points", lambda: None)

    def fake_lstat(path, *a, **kw):
        result = real_lstat(path, *a, **kw)
        if os.fspath(path) == mnt:
            return os.stat_result((*result[:2], result.st_dev + 1, *result[3:]))
        return result

    monkeypatch.setattr(filesystem.os, "lstat", fake_lstat)
    records, [verdict] = _scan(root)
    assert set(records) == {str(root / "local")}
    assert verdict.protected == (mnt,) and verdict.protected_reasons == {mnt: "foreign mount"}


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_real_tmpfs_mount_is_not_crossed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "local")
    mnt = root / "mnt"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount tmpfs here")
    try:
        _fake_repo(mnt / "remote")
        records, [verdict] = _scan(root)
        assert set(records) == {str(root / "local")}
        assert verdict.complete and verdict.protected == (str(mnt),)
        assert verdict.protected_reasons == {str(mnt): "foreign mount"}
        assert "foreign mount" in (verdict.reason or "")
        records, [verdict] = _scan(root, one_file_system=False)
        assert len(records) == 2 and verdict.protected == ()
        assert verdict.coverage["one_file_system"] is False
    finally:
        _umount(mnt)


def test_real_bind_mount_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _fake_repo(root / "p")
    loop = root / "a" / "loop"
    loop.mkdir(parents=True)
    if not _mount("--bind", str(root), str(loop)):
        pytest.skip("cannot bind-mount here")
    try:
        for ofs in (True, False):
            records, [verdict] = _scan(root, one_file_system=ofs)
            assert list(records) == [str(root / "p")]
            assert verdict.complete and verdict.protected == (str(loop),)
            assert verdict.protected_reasons[str(loop)].startswith("bind mount loop")
    finally:
        _umount(loop)


def test_every_subtree_not_entered_is_protected_with_its_reason(tmp_path: Path) -> None:
    """A real tree holding a tmpfs mount, a sub-folder replaced by a symlink to a folder holding
    projects, and a skipped name: the verdict lists the mount and the symlink as protected, each
    with its reason; the skipped name is in the coverage, not protected."""
    root = tmp_path / "root"
    _fake_repo(root / "local")
    elsewhere = tmp_path / "elsewhere"
    _fake_repo(elsewhere / "moved")
    (root / "team").symlink_to(elsewhere, target_is_directory=True)
    _fake_repo(root / "vendor" / "lib")
    mnt = root / "mnt"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount tmpfs here (needs root)")
    try:
        _fake_repo(mnt / "remote")
        records, [verdict] = _scan(root, skip_names=["vendor"])
        assert set(records) == {str(root / "local")}
        assert verdict.complete
        assert sorted(verdict.protected) == sorted([str(mnt), str(root / "team")])
        assert verdict.protected_reasons == {
            str(mnt): "foreign mount",
            str(root / "team"): "symlink not followed",
        }
        assert verdict.coverage["skip_names"] == ["vendor"]
        assert "2 location(s) not entered are protected" in (verdict.reason or "")
    finally:
        _umount(mnt)


def test_mountinfo_parsing_reads_this_system() -> None:
    mounts = filesystem._read_mount_points()
    if mounts is None:
        pytest.skip("no /proc/self/mountinfo")
    assert any(mp == "/" for mp, _ in mounts)
    assert filesystem._unescape_octal(rb"/mnt/a\040b\134c") == b"/mnt/a b\\c"


# --------------------------------------------------------------------------- odd path names


def test_non_utf8_and_newline_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    raw_root = os.fsencode(root)
    bad = raw_root + b"/caf\xe9-\xff"
    os.mkdir(bad)
    _fake_repo(Path(os.fsdecode(bad)))
    nl = root / "line\nbreak"
    _fake_repo(nl)
    literal = root / "caf\\xe9-\\xff"  # the escaped spelling, as a real (UTF-8) name
    _fake_repo(literal)
    records, [verdict] = _scan(root)
    assert len(records) == 3 and verdict.complete
    by_raw = {os.fsencode(unescape_path(loc)): rec for loc, rec in records.items()}
    rec = by_raw[bad]
    assert rec.attributes.get("path_escaped") is True
    assert rec.location == str(root) + "/caf\\xe9-\\xff"
    assert rec.name == "caf\\xe9-\\xff"
    assert os.fsencode(unescape_path(rec.project_key[3:])) == os.fsencode(os.path.realpath(bad))
    assert os.path.isdir(unescape_path(rec.location))
    lit = by_raw[os.fsencode(literal)]
    assert lit.location == str(root) + "/caf\\\\xe9-\\\\xff"
    assert lit.attributes.get("path_escaped") is True
    assert lit.project_key != rec.project_key
    n = records[str(nl)]
    assert n.name == "line\nbreak" and "path_escaped" not in n.attributes


def test_very_long_paths_do_not_crash(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _fake_repo(root / "short")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(24):  # ~24 * 201 bytes: beyond PATH_MAX (4096)
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.mkdir(".git", dir_fd=fd)
    finally:
        os.close(fd)
    records, [verdict] = _scan(root)
    assert str(root / "short") in records
    assert verdict.complete
    assert verdict.protected  # the folder whose path is too long to open
    assert all(len(p) > 3000 for p in verdict.protected)


@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4))
def test_escape_round_trip(parts: list[bytes]) -> None:
    raw = b"/" + b"/".join(p.replace(b"/", b"_").replace(b"\x00", b"_") for p in parts)
    path = os.fsdecode(raw)
    text = escape_path(path)
    text.encode("utf-8")
    assert unescape_path(text) == path
    assert os.fsencode(unescape_path(text)) == raw
    if b"\\" not in raw:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            assert text == path  # plain names are untouched


@given(st.binary(max_size=8), st.binary(max_size=8))
def test_escape_is_injective(a: bytes, b: bytes) -> None:
    if a != b:
        assert escape_path(os.fsdecode(a)) != escape_path(os.fsdecode(b))
