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

This module holds the walk (``FilesystemSource``, ``_RootWalk``); its parts, whose names it
re-exports: ``fspaths`` (``escape_path``/``unescape_path``, the mount table) and ``fsprojects``
(VCS detection, markers, ``project_record``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.coverage import outside_walk
from enum_pipeline.sources.fields import CHECKOUT_FILLED
from enum_pipeline.sources.fspaths import (  # noqa: F401 - re-exported
    _describe,
    _read_mount_points,
    _unescape_octal,
    escape_path,
    unescape_path,
)
from enum_pipeline.sources.fsprojects import (  # noqa: F401 - re-exported
    _METADATA_DIRS,
    _SPECIAL_NAMES,
    CODEOWNERS_DIRS,
    KIND,
    LICENSE_PREFIXES,
    MARKER_FILES,
    MARKER_SUFFIXES,
    detect,
    project_record,
    read_git_meta,
)
from enum_pipeline.sources.witness import Candidate, Confirmation, filesystem_absence

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


class FilesystemSource:
    """Projects under local root folders (see module docstring)."""

    kind = KIND
    #: The kind's facts: the columns it fills, what a walk could not have seen, and how a
    #: checkout's absence is confirmed (its own path looked at after the run's read).
    filled_columns = CHECKOUT_FILLED
    coverage_rule = staticmethod(outside_walk)

    @staticmethod
    def confirm_absence(candidates: Iterable[Candidate]) -> Iterator[Confirmation]:
        """Look at each candidate checkout's own path (``sources.witness.filesystem_absence``)."""
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
                vcs, vcs_found = detect(path, names, subdirs, parent_vcs)
                if vcs is not None:
                    rec = project_record(
                        path,
                        real,
                        vcs,
                        vcs_found,
                        names,
                        subdirs,
                        parent_key,
                        self.scope_key,
                        self._device,
                    )
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


class _RootUnreadable(Exception):
    pass
