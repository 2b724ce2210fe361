"""Filesystem source: find version-controlled projects under root folders.

Walk (``os.scandir``, iterative, depth-first) each root and record every project root: a folder
holding ``.git`` (directory or ``gitdir:`` file), ``.hg``, ``.svn``, ``.jj``, ``.fslckout`` or
``_FOSSIL_``, and bare git repositories (``HEAD`` + ``config`` + ``objects/`` + ``refs/``). The walk
continues inside work trees (never inside ``.git``/``.hg``/``.svn``/``.jj``) so submodules and
vendored clones are found too, flagged ``attributes["nested_in"]``; bare repositories are not
entered. Git metadata comes from ``gitmeta`` (files only, no ``git`` process).

Scopes: one per root, key ``fs:<os.path.abspath(root)>``, ended by exactly one ``ScopeVerdict``:

* a root that is missing, not a directory or unreadable: ``complete=False`` and no records;
* every sub-tree the walk does not enter is listed in ``protected`` with its reason in
  ``protected_reasons`` (and in ``reason``), so cleanup keeps every project under it: a folder
  that cannot be listed (``"unreadable: <error>"``: permission denied, any ``OSError``, path too
  long); with ``one_file_system`` a mount point of another device (``"foreign mount"``, found once
  per root in ``/proc/self/mountinfo``, else by an ``lstat`` per folder); a bind mount of an
  ancestor (a loop); a symlinked folder when symlinks are not followed (``"symlink not
  followed"``). The scope stays complete;
* an unexpected exception ends that root with ``complete=False`` (the next roots still run).

``identity`` is the root's real path and device; ``coverage`` the walk settings (what a narrowed
``skip_names``, ``max_depth`` or ``nested`` no longer reaches is out of coverage, not gone).

Symlinks are never followed unless ``follow_symlinks`` (then loops and folders reached twice are
detected by ``(st_dev, st_ino)``). ``project_key`` is ``fs:`` + the real path (the root resolved
once, plus the walked relative path); a project reachable from two roots is yielded once.

Path strings: POSIX paths are bytes; the record needs UTF-8 text (PostgreSQL). ``escape_path``
turns undecodable bytes (surrogate escapes from ``os.fsdecode``) into ``\\xNN`` and doubles every
literal backslash, so distinct paths always give distinct strings and ``unescape_path`` recovers
the original path exactly. Paths with neither are unchanged; records whose strings changed carry
``attributes["path_escaped"] = True``. Newlines are kept as they are (valid UTF-8).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.coverage import outside_walk
from enum_pipeline.sources.fields import FILLED_COLUMNS
from enum_pipeline.sources.gitmeta import decode_text, read_git_meta, read_small
from enum_pipeline.sources.remotes import normalize_remote, redact_url

__all__ = [
    "DEFAULT_SKIP_NAMES",
    "MARKER_FILES",
    "MARKER_SUFFIXES",
    "FilesystemSource",
    "escape_path",
    "unescape_path",
]

#: Folder names never entered. Caches, virtualenvs, package stores and build caches only: they
#: are large and hold no projects of the owner's (pip's ``venv/src`` editable clones and
#: ``node_modules`` git dependencies are third-party copies). Deliberately *not* skipped because
#: projects live there in normal layouts: ``target``, ``build``, ``dist``, ``vendor``, ``deps``,
#: ``third_party``, ``external``, ``.local``.
DEFAULT_SKIP_NAMES: frozenset[str] = frozenset(
    {
        "node_modules",
        "bower_components",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".eggs",
        ".direnv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".cache",
        ".gradle",
        ".m2",
        ".npm",
        ".pnpm-store",
        ".yarn-cache",
        ".cargo",
        ".rustup",
        ".terraform",
        ".Trash",
    }
)

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


def escape_path(path: str) -> str:
    """Make an ``os.fsdecode``-d path valid UTF-8, reversibly (see module docstring)."""
    if "\\" not in path:
        try:
            path.encode("utf-8")
            return path
        except UnicodeEncodeError:
            pass
    text = path.replace("\\", "\\\\")
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not a byte escape: not from fsdecode
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unescape_path(text: str) -> str:
    """Invert ``escape_path``: ``\\\\`` becomes ``\\`` and ``\\xNN`` the original byte.

    The result is the ``os.fsdecode`` form (undecodable bytes as surrogate escapes), usable
    directly with ``os`` functions; ``os.fsencode`` of it gives the original bytes.
    """
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "\\":
                out.append("\\")
                i += 2
                continue
            if nxt == "x" and i + 4 <= n:
                try:
                    byte = int(text[i + 2 : i + 4], 16)
                except ValueError:
                    byte = -1
                if byte >= 0x80:
                    out.append(chr(0xDC00 + byte))
                    i += 4
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def _read_mount_points() -> list[tuple[str, str]] | None:
    """``(mount point, major:minor)`` pairs from ``/proc/self/mountinfo``; None if unavailable."""
    try:
        data = read_small("/proc/self/mountinfo", 1 << 26)
    except OSError:
        return None
    mounts: list[tuple[str, str]] = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        raw = fields[4]
        if b"\\" in raw:  # octal escapes: \040 space, \011 tab, \012 newline, \134 backslash
            raw = _unescape_octal(raw)
        mounts.append((os.fsdecode(raw), fields[2].decode("ascii", "replace")))
    return mounts


def _unescape_octal(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 4].isdigit() and len(raw[i + 1 : i + 4]) == 3:
            out.append(int(raw[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


class FilesystemSource:
    """Projects under local root folders (see module docstring)."""

    kind = "filesystem"
    #: The kind's facts: the columns it fills, what a walk could not have seen, and how a
    #: checkout's absence is confirmed (its own path looked at after the run's read).
    filled_columns = FILLED_COLUMNS["filesystem"]
    coverage_rule = staticmethod(outside_walk)

    @staticmethod
    def confirm_absence(candidates):  # noqa: ANN001, ANN205 - sources.witness types
        """Look at each candidate checkout's own path (``sources.witness.filesystem_absence``)."""
        from enum_pipeline.sources.witness import filesystem_absence

        return (filesystem_absence(c) for c in candidates)

    def __init__(
        self,
        roots: list[str],
        skip_names: Iterable[str] | None = None,
        follow_symlinks: bool = False,
        one_file_system: bool = True,
        max_depth: int | None = None,
        *,
        nested: bool = True,
    ) -> None:
        """Configure the walk.

        ``skip_names``: folder names never entered (default ``DEFAULT_SKIP_NAMES``; roots
        themselves are always entered). ``follow_symlinks``: follow symlinked folders (loops and
        repeats detected by ``(st_dev, st_ino)``). ``one_file_system``: do not enter mount points
        of another device. ``max_depth``: deepest folder listed (a root is depth 0); projects
        deeper are out of scope. ``nested``: keep walking inside work trees to find nested
        repositories (submodules, vendored clones); False stops at each project root.
        """
        self.roots = [os.fsdecode(r) for r in roots]
        self.skip_names = frozenset(DEFAULT_SKIP_NAMES if skip_names is None else skip_names)
        self.follow_symlinks = follow_symlinks
        self.one_file_system = one_file_system
        self.max_depth = max_depth
        self.nested = nested

    def coverage(self) -> dict[str, Any]:
        """The walk settings, as ``ScopeVerdict.coverage`` carries them."""
        return {
            "skip_names": sorted(self.skip_names),
            "max_depth": self.max_depth,
            "nested": self.nested,
            "one_file_system": self.one_file_system,
            "follow_symlinks": self.follow_symlinks,
        }

    @staticmethod
    def scope_key_for(root: str) -> str:
        """Scope key of one root: ``fs:`` + ``os.path.abspath(root)`` (escaped)."""
        return "fs:" + escape_path(os.path.abspath(root))

    def scope_keys(self) -> list[str]:
        """One scope key per root, in order (duplicates kept, as configured)."""
        return [self.scope_key_for(r) for r in self.roots]

    def scan(self) -> Iterator[ScanItem]:
        """Yield the projects of every root, each root ended by its ``ScopeVerdict``.

        A project reachable from two roots (overlapping roots) is yielded once, under the first.
        """
        yielded: set[str] = set()
        for root in self.roots:
            yield from _RootWalk(self, root, yielded).run()


_Item = tuple[str, str, int, str | None, str | None]


class _RootWalk:
    """The walk of one root (state kept on the instance; ``run`` is the generator)."""

    def __init__(self, src: FilesystemSource, root: str, yielded: set[str]) -> None:
        self.src = src
        self.root = os.path.abspath(root)
        self.scope_key = FilesystemSource.scope_key_for(root)
        self.yielded = yielded
        self.seen = 0
        self.protected: list[str] = []
        self.protected_reasons: dict[str, str] = {}
        self.duplicates = 0
        self.symlinks_skipped = 0
        self.root_dev = 0
        self.dev_each_dir = False
        self.foreign: set[str] | None = None
        self.inner_mounts: set[str] = set()
        self.visited: set[tuple[int, int]] = set()
        self.mount_points: dict[int, str] = {}

    def _device(self, path: str, real: str) -> dict[str, Any]:
        """The device a checkout lives on and that device's mount point (found once a device),
        so its absence can later be told from a mount that went away."""
        try:
            dev = os.stat(path).st_dev
        except OSError:
            return {}
        mount = self.mount_points.get(dev)
        if mount is None:
            mount = real
            while mount != "/":
                parent = os.path.dirname(mount)
                try:
                    if os.stat(parent).st_dev != dev:
                        break
                except OSError:
                    break
                mount = parent
            self.mount_points[dev] = mount
        return {"device": dev, "mount_point": escape_path(mount)}

    def _verdict(
        self, complete: bool, reason: str | None, identity: dict[str, Any] | None = None
    ) -> ScopeVerdict:
        return ScopeVerdict(
            scope_key=self.scope_key,
            source_kind=FilesystemSource.kind,
            complete=complete,
            seen=self.seen,
            reason=reason,
            protected=tuple(self.protected),
            identity=identity or {},
            coverage=self.src.coverage(),
            protected_reasons=dict(self.protected_reasons),
        )

    def run(self) -> Iterator[ScanItem]:
        root = self.root
        try:
            st = os.stat(root)
        except FileNotFoundError:
            yield self._verdict(False, f"root does not exist: {escape_path(root)}")
            return
        except OSError as exc:
            yield self._verdict(False, f"root cannot be read: {_describe(exc)}")
            return
        if not stat.S_ISDIR(st.st_mode):
            yield self._verdict(False, f"root is not a directory: {escape_path(root)}")
            return
        try:
            real_root = os.path.realpath(root)
        except OSError as exc:
            yield self._verdict(False, f"root cannot be resolved: {_describe(exc)}")
            return
        self.root_dev = st.st_dev
        identity: dict[str, Any] = {"real_path": escape_path(real_root), "st_dev": st.st_dev}
        try:
            yield from self._walk(root, real_root, st)
        except _RootUnreadable as exc:
            yield self._verdict(False, f"root cannot be listed: {exc}", identity)
            return
        except Exception as exc:  # a bug or the unforeseen: this scope cannot be trusted
            reason = f"scan of this root aborted: {type(exc).__name__}: {exc}"
            yield self._verdict(False, escape_path(reason), identity)
            return
        reasons = []
        if self.protected:
            shown = ", ".join(f"{p} ({self.protected_reasons[p]})" for p in self.protected[:5])
            more = f" and {len(self.protected) - 5} more" if len(self.protected) > 5 else ""
            reasons.append(
                f"{len(self.protected)} location(s) not entered are protected: {shown}{more}"
            )
        if self.duplicates:
            reasons.append(f"{self.duplicates} project(s) already yielded under an earlier root")
        yield self._verdict(True, "; ".join(reasons) or None, identity)

    def _mounts_under(self, real_root: str) -> tuple[set[str], set[str]] | None:
        """Mount points strictly under the root, from ``/proc/self/mountinfo``.

        Returns ``(foreign, inner)``: real paths of mount points on another device (skipped when
        ``one_file_system``), and of the other mount points (entered, but checked for bind-mount
        loops). None when mountinfo is unavailable.
        """
        mounts = _read_mount_points()
        if mounts is None:
            return None
        prefix = real_root.rstrip("/") + "/"
        root_dev = f"{os.major(self.root_dev)}:{os.minor(self.root_dev)}"
        foreign: set[str] = set()
        inner: set[str] = set()
        for mp, dev in mounts:
            if not mp.startswith(prefix):
                continue
            if self.src.one_file_system and dev != root_dev:
                try:
                    same = os.stat(mp).st_dev == self.root_dev
                except OSError:
                    same = False  # unreachable mount (e.g. stale network share): do not enter
                if not same:
                    foreign.add(mp)
                    continue
            inner.add(mp)
        return foreign, inner

    @staticmethod
    def _is_mount_loop(path: str) -> bool:
        """True when the folder mounted at ``path`` is one of its own ancestors (a bind loop)."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        ident = (st.st_dev, st.st_ino)
        p = os.path.dirname(path)
        while True:
            try:
                pst = os.stat(p)
            except OSError:
                return False
            if (pst.st_dev, pst.st_ino) == ident:
                return True
            parent = os.path.dirname(p)
            if parent == p:
                return False
            p = parent

    def _walk(self, root: str, real_root: str, root_st: os.stat_result) -> Iterator[ProjectRecord]:
        src = self.src
        max_depth = src.max_depth
        prune = src.skip_names | _METADATA_DIRS
        self.dev_each_dir = False
        if not src.follow_symlinks:
            found = self._mounts_under(real_root)
            if found is None:
                self.dev_each_dir = src.one_file_system
            else:
                self.foreign, self.inner_mounts = found
        # children need a closer look (stat, loop or mount check) in these cases only
        slow_children = (
            src.follow_symlinks or self.dev_each_dir or bool(self.foreign or self.inner_mounts)
        )
        self.visited = {(root_st.st_dev, root_st.st_ino)}

        # stack items: (walk path, real path, depth, enclosing project key, enclosing vcs)
        stack: list[_Item] = [(root, real_root, 0, None, None)]
        pop = stack.pop
        while stack:
            path, real, depth, parent_key, parent_vcs = item = pop()
            listed = self._list(path, depth)
            if listed is None:
                continue
            names, subdirs, links = listed
            if not _SPECIAL_NAMES.isdisjoint(names):
                vcs, vcs_found = _detect(path, names, subdirs, parent_vcs)
                if vcs is not None:
                    rec = self._record(path, real, vcs, vcs_found, names, subdirs, parent_key)
                    if rec.project_key in self.yielded:
                        self.duplicates += 1
                    else:
                        self.yielded.add(rec.project_key)
                        self.seen += 1
                        yield rec
                    if not src.nested or vcs == "bare":
                        continue
                    item = (path, real, depth, rec.project_key, vcs)
            if max_depth is not None and depth >= max_depth:
                continue
            if links:
                self._protect_links(path, links, prune)
            if slow_children:
                self._push_slow(stack, item, subdirs, prune)
            else:
                prefix = path + "/" if path != "/" else "/"
                rprefix = real + "/" if real != "/" else "/"
                d1 = depth + 1
                _, _, _, key, vcs_ = item
                stack.extend(
                    [(prefix + n, rprefix + n, d1, key, vcs_) for n in subdirs if n not in prune]
                )

    def _list(self, path: str, depth: int) -> tuple[list[str], list[str], list[str]] | None:
        """Entry names, sub-folder names and (unfollowed) symlink names of one folder.

        None when it cannot be listed (it is then protected); an unreadable root raises.
        """
        follow = self.src.follow_symlinks
        names: list[str] = []
        subdirs: list[str] = []
        links: list[str] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    name = entry.name
                    names.append(name)
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
                    elif entry.is_symlink():
                        # followed: resolved (or dropped) in _push_slow; else maybe protected
                        (subdirs if follow else links).append(name)
        except OSError as exc:
            if depth == 0:
                raise _RootUnreadable(_describe(exc)) from exc
            self._protect(path, f"unreadable: {exc.strerror or type(exc).__name__}")
            return None
        return names, subdirs, links

    def _protect_links(self, path: str, links: list[str], prune: frozenset[str]) -> None:
        """Protect the symlinked folders the walk does not follow (what is below is unseen)."""
        prefix = path + "/" if path != "/" else "/"
        for name in links:
            if name not in prune and os.path.isdir(prefix + name):
                self._protect(prefix + name, "symlink not followed")

    def _push_slow(
        self, stack: list[_Item], item: _Item, subdirs: list[str], prune: frozenset[str]
    ) -> None:
        """Push children when symlinks are followed or mount points must be checked."""
        path, real, depth, parent_key, parent_vcs = item
        prefix = path + "/" if path != "/" else "/"
        rprefix = real + "/" if real != "/" else "/"
        for name in subdirs:
            if name in prune:
                continue
            cpath = prefix + name
            if self.src.follow_symlinks:
                creal = self._follow(cpath, rprefix + name)
            else:
                creal = self._check_mount(cpath, rprefix + name)
            if creal is not None:
                stack.append((cpath, creal, depth + 1, parent_key, parent_vcs))

    def _follow(self, cpath: str, creal: str) -> str | None:
        """The real path of a child when symlinks are followed, or None: not to be entered."""
        try:
            cst = os.stat(cpath)  # follows symlinks
        except OSError:
            return None  # dangling symlink or vanished folder
        if not stat.S_ISDIR(cst.st_mode):
            return None
        ident = (cst.st_dev, cst.st_ino)
        if ident in self.visited:
            self.symlinks_skipped += 1  # a loop, or a folder reached twice: walked already
            return None
        if self.src.one_file_system and cst.st_dev != self.root_dev:
            self._protect(cpath, "foreign mount")
            return None
        self.visited.add(ident)
        return os.path.realpath(cpath) if os.path.islink(cpath) else creal

    def _check_mount(self, cpath: str, creal: str) -> str | None:
        """``creal``, or None for a mount point not to be entered (then protected)."""
        if self.foreign is not None:
            if creal in self.foreign:
                self._protect(cpath, "foreign mount")
                return None
            if creal in self.inner_mounts and self._is_mount_loop(cpath):
                self._protect(cpath, "bind mount loop: an ancestor mounted again")
                return None
        elif self.dev_each_dir:
            try:
                if os.lstat(cpath).st_dev != self.root_dev:
                    self._protect(cpath, "foreign mount")
                    return None
            except OSError:
                pass  # reported when listed
        return creal

    def _protect(self, path: str, why: str) -> None:
        p = escape_path(path)
        if p not in self.protected_reasons:
            self.protected.append(p)
        self.protected_reasons[p] = why

    def _record(
        self,
        path: str,
        real: str,
        vcs: str,
        vcs_found: dict[str, str],
        names: list[str],
        subdirs: list[str],
        parent_key: str | None,
    ) -> ProjectRecord:
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
        attrs.update(self._device(path, real))
        checkout = meta is not None and not meta.bare
        return ProjectRecord(
            project_key="fs:" + key_path,
            scope_key=self.scope_key,
            source_kind=FilesystemSource.kind,
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


def _detect(
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


class _RootUnreadable(Exception):
    pass


def _describe(exc: OSError) -> str:
    name = exc.filename if isinstance(exc.filename, str) else None
    what = exc.strerror or type(exc).__name__
    return f"{what}: {escape_path(name)}" if name else what


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
