"""What the filesystem walk records of a project root: which VCS, its markers, its metadata.

``detect`` tells from a folder's entry names whether it is a project root (``.git``, ``.hg``,
``.svn``, ``.jj``, ``.fslckout``/``_FOSSIL_``, or a bare git repository); ``project_record``
builds its ``ProjectRecord``: git metadata from ``gitmeta`` (files only, no ``git`` process),
Mercurial's from ``.hg`` files, the ecosystem markers, the device it lives on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.fspaths import escape_path
from enum_pipeline.sources.gitfiles import decode_text, read_small
from enum_pipeline.sources.gitmeta import read_git_meta
from enum_pipeline.sources.remotes import normalize_remote, redact_url

KIND = "filesystem"  # ``FilesystemSource.kind``

#: Ecosystem files recorded in ``ProjectRecord.markers`` when present at a project root.
MARKER_FILES: frozenset[str] = frozenset(
    {
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "requirements.txt",
        "Pipfile",
        "package.json",
        "deno.json",
        "deno.jsonc",
        "Cargo.toml",
        "go.mod",
        "pom.xml",
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
        "build.sbt",
        "Gemfile",
        "composer.json",
        "mix.exs",
        "rebar.config",
        "CMakeLists.txt",
        "meson.build",
        "Makefile",
        "GNUmakefile",
        "configure.ac",
        "Dockerfile",
        "pubspec.yaml",
        "Package.swift",
        "Podfile",
        "stack.yaml",
        "cabal.project",
        "dune-project",
        "build.zig",
        "flake.nix",
        "default.nix",
        "DESCRIPTION",
        "Project.toml",
        "WORKSPACE",
        "MODULE.bazel",
        "BUILD.bazel",
        "catalog-info.yaml",
        "CODEOWNERS",
    }
)
#: ``CODEOWNERS`` in these sub-folders is recorded as ``<folder>/CODEOWNERS``.
CODEOWNERS_DIRS: tuple[str, ...] = (".github", "docs")
#: Any file whose upper-cased name starts with one of these is recorded as the ``LICENSE*`` marker.
LICENSE_PREFIXES: tuple[str, ...] = ("LICENSE", "LICENCE")
#: File-name suffixes recorded as ``*<suffix>`` markers (e.g. ``*.csproj``).
MARKER_SUFFIXES: tuple[str, ...] = (
    ".csproj",
    ".fsproj",
    ".vbproj",
    ".sln",
    ".cabal",
    ".gemspec",
    ".nimble",
)

_VCS_NAMES = {
    ".git": "git",
    ".hg": "hg",
    ".svn": "svn",
    ".jj": "jj",
    ".fslckout": "fossil",
    "_FOSSIL_": "fossil",
}
_BARE_FILES = ("HEAD", "config")
# names whose presence makes a folder worth a closer look (checked with one set operation)
_SPECIAL_NAMES = frozenset((*_VCS_NAMES, *_BARE_FILES))
_VCS_ORDER = ("git", "jj", "hg", "svn", "fossil")  # which VCS names a folder holding several
_METADATA_DIRS = frozenset({".git", ".hg", ".svn", ".jj"})  # never descended into


def _markers(path: str, names: list[str], subdirs: list[str]) -> tuple[str, ...]:
    found = set(MARKER_FILES.intersection(names))
    for n in names:
        if n.endswith(MARKER_SUFFIXES):
            found.add("*" + n[n.rfind(".") :])
        elif n[:1] in "Ll" and n.upper().startswith(LICENSE_PREFIXES) and n not in subdirs:
            found.add("LICENSE*")
    for d in CODEOWNERS_DIRS:
        if d in subdirs:
            p = f"{path}/{d}/CODEOWNERS"
            # usually absent: access() says so without the exception isfile's stat raises
            if os.access(p, os.F_OK) and os.path.isfile(p):
                found.add(f"{d}/CODEOWNERS")
    return tuple(sorted(found))


def project_record(
    path: str,
    real: str,
    vcs: str,
    vcs_found: dict[str, str],
    names: list[str],
    subdirs: list[str],
    parent_key: str | None,
    scope_key: str,
    device: Callable[[str, str], dict[str, Any]],
) -> ProjectRecord:
    """The record of the project rooted at ``path`` (walked path; ``real``: its real path).

    ``vcs``: what ``detect`` found (``"bare"`` for a bare git repository); ``names`` and
    ``subdirs``: the folder's entries; ``parent_key``: the project it is nested in;
    ``device(path, real)``: the device attributes (the walk caches mount points).
    """
    location = escape_path(path)
    key_path = escape_path(real)
    base = path.rstrip("/").rsplit("/", 1)[-1] or "/"
    name = escape_path(base)
    attrs: dict[str, Any] = {}
    remote = branch = head = default = None
    when = None
    meta = None
    if vcs == "git" or vcs == "bare":
        bare = vcs == "bare"
        if bare:
            meta = read_git_meta(path, bare=True)
        else:
            # a real .git directory is in subdirs; a file or a symlink is looked at closer
            is_dir = True if ".git" in subdirs else None
            meta = read_git_meta(path + "/.git", is_dir=is_dir)
        vcs = "git"
        remote = meta.remote_url
        if bare:  # no checkout: HEAD names the repository's default branch
            default = meta.branch
        else:
            branch = meta.branch
            default = meta.remote_head
        head = meta.head_commit
        when = meta.last_commit_at
        attrs["bare"] = bare
        attrs["detached"] = meta.detached
        attrs["unborn"] = meta.unborn
        attrs["worktree"] = meta.worktree
        if meta.ref_storage:
            attrs["ref_storage"] = meta.ref_storage
        if meta.errors:
            attrs["error"] = "; ".join(meta.errors)
    elif vcs == "hg":
        remote, branch, err = _hg_meta(path)
        if err:
            attrs["error"] = err
    others = sorted(v for v in vcs_found if v != vcs)
    if others:
        attrs["other_vcs"] = others
    if parent_key is not None:
        attrs["nested_in"] = parent_key
    if location != path or key_path != real or name != base:
        attrs["path_escaped"] = True
    attrs.update(device(path, real))
    checkout = meta is not None and not meta.bare
    return ProjectRecord(
        project_key="fs:" + key_path,
        scope_key=scope_key,
        source_kind=KIND,
        name=name,
        location=location,
        vcs=vcs,
        path=location,
        remote_url=remote,
        normalized_remote=normalize_remote(remote) if remote else None,
        default_branch=default,
        current_branch=branch,
        head_commit=head,
        last_commit_at=when,
        last_activity_at=when,
        markers=_markers(path, names, subdirs),
        attributes=attrs,
        remotes=(meta.remotes or None) if meta is not None else None,
        upstream=meta.upstream if checkout else None,
        in_sync=meta.in_sync if checkout else None,
        shallow=meta.shallow if meta is not None else None,
        has_stash=meta.has_stash if checkout else None,
        last_fetch_at=meta.last_fetch_at if checkout else None,
    )


def detect(
    path: str, names: list[str], subdirs: list[str], parent_vcs: str | None
) -> tuple[str | None, dict[str, str]]:
    """Which VCS (or ``"bare"``) a folder is the root of, from its entry names; None: not one."""
    vcs_found: dict[str, str] = {}
    for n in _SPECIAL_NAMES.intersection(names):
        v = _VCS_NAMES.get(n)
        if v is not None:
            vcs_found[v] = n
    if vcs_found:
        vcs = next(v for v in _VCS_ORDER if v in vcs_found)
        # pre-1.7 Subversion keeps a .svn in every folder of one working copy: only a .svn
        # holding wc.db starts a new (nested) working copy inside another
        if (
            vcs == "svn"
            and parent_vcs == "svn"
            and len(vcs_found) == 1
            and not os.path.exists(f"{path}/.svn/wc.db")
        ):
            return None, vcs_found
        return vcs, vcs_found
    if (
        "objects" in subdirs
        and "refs" in subdirs
        and "HEAD" not in subdirs
        and "config" not in subdirs
        and "HEAD" in names
        and "config" in names
    ):
        return "bare", vcs_found
    return None, vcs_found


def _hg_meta(path: str) -> tuple[str | None, str | None, str | None]:
    """Mercurial ``paths.default`` (redacted) and current branch, read from ``.hg`` files."""
    remote = None
    branch = "default"
    err = None
    try:
        section = None
        for raw in read_small(path + "/.hg/hgrc", 1 << 20).split(b"\n"):
            line = raw.strip()
            if line.startswith(b"[") and line.endswith(b"]"):
                section = line[1:-1].strip().lower()
            elif section == b"paths" and b"=" in line and not line.startswith((b"#", b";")):
                key, _, value = line.partition(b"=")
                if key.strip() == b"default" and value.strip():
                    remote = redact_url(decode_text(value.strip()))
    except FileNotFoundError:
        pass
    except OSError as exc:
        err = f"hgrc: {exc.strerror or type(exc).__name__}"
    try:
        branch = decode_text(read_small(path + "/.hg/branch", 4096).strip()) or "default"
    except FileNotFoundError:
        pass
    except OSError as exc:
        err = f"branch: {exc.strerror or type(exc).__name__}"
    return remote, branch, err
