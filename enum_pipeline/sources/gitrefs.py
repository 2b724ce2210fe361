"""Git refs read from files: the git dir, HEAD, loose refs, packed-refs, a checkout's upstream.

A ref is read from its loose file, else from ``packed-refs`` (read at most once a repository,
``PackedRefs``); symbolic refs are followed. A ``reftable`` repository is noted, not read. The
upstream (``branch.<name>.remote`` + ``merge``, from ``gitconfig``) is compared with HEAD for
``in_sync``; the remote's ``HEAD``, ``shallow``, the stash and ``FETCH_HEAD`` are one lookup each.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from enum_pipeline.sources.gitfiles import (
    MAX_PACKED_REFS,
    GitMeta,
    GitMetaError,
    _err,
    _exists,
    decode_text,
    read_small,
)
from enum_pipeline.sources.remotes import redact_url

_HEX = frozenset(b"0123456789abcdef")
_SHA_LENGTHS = (40, 64)  # SHA-1 and SHA-256 repositories
# refs living in the per-worktree git dir rather than the common dir
_PER_WORKTREE_PREFIXES = ("refs/worktree/", "refs/bisect/", "refs/rewritten/")


def _is_sha(raw: bytes) -> bool:
    return len(raw) in _SHA_LENGTHS and _HEX.issuperset(raw)


def _valid_refname(ref: str) -> bool:
    return (
        ref.startswith("refs/") or ref.isupper()  # e.g. "refs/heads/x", "ORIG_HEAD"
    ) and not (".." in ref or "\\" in ref or "\x00" in ref or "//" in ref or ref.endswith("/"))


# --------------------------------------------------------------------------- locating git dirs


def resolve_git_dir(dotgit: str, is_dir: bool | None = None) -> tuple[str, str, bool]:
    """Resolve a ``.git`` entry to ``(git_dir, common_dir, is_linked_worktree)``.

    ``dotgit`` is a ``.git`` directory, or a ``.git`` file holding ``gitdir: <path>`` (relative to
    the folder holding the file). A linked worktree's git dir has a ``commondir`` file naming the
    directory that holds refs, objects and config. ``is_dir``: True for a real (not symlinked)
    directory, False for a file, None to find out; a real ``.git`` directory is never a linked
    worktree, so ``commondir`` is not read then.
    Raises ``GitMetaError`` or ``OSError``.
    """
    if is_dir is None:
        if os.path.isdir(dotgit):
            if os.path.islink(dotgit):  # a symlinked .git may point into .git/worktrees/<name>
                return _with_commondir(dotgit)
            return dotgit, dotgit, False
        is_dir = False
    if is_dir:
        return dotgit, dotgit, False
    raw = read_small(dotgit).strip()
    if not raw.startswith(b"gitdir:"):
        raise GitMetaError(".git file does not start with 'gitdir:'")
    target = os.fsdecode(raw[7:].strip())
    if not target or "\x00" in target:
        raise GitMetaError(".git file names an empty gitdir")
    git_dir = os.path.normpath(os.path.join(os.path.dirname(dotgit), target))
    return _with_commondir(git_dir)


def _with_commondir(git_dir: str) -> tuple[str, str, bool]:
    try:
        raw = read_small(os.path.join(git_dir, "commondir")).strip()
    except (FileNotFoundError, NotADirectoryError):
        return git_dir, git_dir, False
    if not raw or b"\x00" in raw:
        raise GitMetaError("empty or malformed commondir file")
    common = os.path.normpath(os.path.join(git_dir, os.fsdecode(raw)))
    return git_dir, common, True


# --------------------------------------------------------------------------------------- refs


class PackedRefs:
    """``packed-refs`` of one repository, read at most once however many refs are looked up."""

    __slots__ = ("common_dir", "_data")

    def __init__(self, common_dir: str) -> None:
        self.common_dir = common_dir
        self._data: bytes | None = None

    def get(self, ref: str) -> str | None:
        """The sha ``ref`` has in ``packed-refs``; None when absent (or no such file)."""
        if self._data is None:
            try:
                data = read_small(self.common_dir + "/packed-refs", MAX_PACKED_REFS)
            except (FileNotFoundError, NotADirectoryError):
                data = b""
            self._data = data if data.endswith(b"\n") or not data else data + b"\n"
        return _find_packed(self._data, ref)


def read_ref(
    git_dir: str,
    common_dir: str,
    ref: str,
    _depth: int = 0,
    *,
    packed: PackedRefs | None = None,
) -> str | None:
    """Resolve ``ref`` (e.g. ``refs/heads/main``) to a hex sha: loose file, else ``packed-refs``.

    Follows symbolic refs (``ref: ...``) up to 5 levels. Returns None when the ref does not exist
    (an unborn branch); raises ``GitMetaError``/``OSError`` when a file is unreadable or malformed.
    ``packed``: a ``PackedRefs`` shared by several lookups in one repository.
    """
    if _depth > 5:
        raise GitMetaError(f"symbolic ref loop at {redact_url(ref)}")
    if not _valid_refname(ref):
        raise GitMetaError(f"invalid ref name {redact_url(ref)!r}")
    base = git_dir if ref.startswith(_PER_WORKTREE_PREFIXES) or "/" not in ref else common_dir
    try:
        raw = read_small(base + "/" + ref).strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raw = None
    if raw is not None:
        if raw.startswith(b"ref:"):
            target = decode_text(raw[4:].strip())
            return read_ref(git_dir, common_dir, target, _depth + 1, packed=packed)
        if _is_sha(raw):
            return raw.decode("ascii")
        raise GitMetaError(f"malformed ref file {redact_url(ref)}")
    if packed is not None:
        return packed.get(ref)
    return read_packed_ref(common_dir, ref)


def read_symref(common_dir: str, ref: str) -> str | None:
    """The target of the symbolic ref file ``ref`` (e.g. ``refs/remotes/origin/HEAD``), or None
    when it does not exist or is not symbolic (``packed-refs`` never holds symbolic refs)."""
    try:
        raw = read_small(common_dir + "/" + ref).strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if not raw.startswith(b"ref:"):
        return None
    target = decode_text(raw[4:].strip())
    return target if _valid_refname(target) else None


def read_packed_ref(common_dir: str, ref: str) -> str | None:
    """Look ``ref`` up in ``<common_dir>/packed-refs``; None when absent (or no such file)."""
    try:
        data = read_small(common_dir + "/packed-refs", MAX_PACKED_REFS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not data.endswith(b"\n"):
        data += b"\n"
    return _find_packed(data, ref)


def _find_packed(data: bytes, ref: str) -> str | None:
    needle = b" " + os.fsencode(ref) + b"\n"
    pos = data.find(needle)
    while pos != -1:
        start = data.rfind(b"\n", 0, pos) + 1
        sha = data[start:pos]
        if _is_sha(sha):
            return sha.decode("ascii")
        pos = data.find(needle, pos + 1)
    return None


# -------------------------------------------------------------------- HEAD and the checkout's state


def _read_head(meta: GitMeta, git_dir: str, common_dir: str, packed: PackedRefs) -> str | None:
    """The commit HEAD points at (branch, detached, unborn and reftable noted on ``meta``)."""
    try:
        head = read_small(git_dir + "/HEAD").strip()
        if head.startswith(b"ref:"):
            ref = decode_text(head[4:].strip())
            meta.head_ref = ref
            meta.branch = redact_url(ref[11:] if ref.startswith("refs/heads/") else ref)
            sha = read_ref(git_dir, common_dir, ref, packed=packed)
            if sha is None:
                if os.path.isdir(common_dir + "/reftable"):
                    meta.ref_storage = "reftable"
                    meta.branch = None
                else:
                    meta.unborn = True
            return sha
        if _is_sha(head):
            meta.detached = True
            return head.decode("ascii")
        meta.errors.append("HEAD: neither a symbolic ref nor a commit id")
    except (OSError, GitMetaError, ValueError) as exc:
        meta.errors.append(f"HEAD: {_err(exc)}")
    return None


def _checkout_state(
    meta: GitMeta,
    git_dir: str,
    common_dir: str,
    up: tuple[str, str] | None,
    sha: str | None,
    packed: PackedRefs,
) -> None:
    """Fill the remote's default branch, upstream and sync, shallow, stash and last fetch."""
    try:
        if meta.remote_name is not None:
            prefix = f"refs/remotes/{meta.remote_name}/"
            target = read_symref(common_dir, prefix + "HEAD")
            if target is not None and target.startswith(prefix):
                meta.remote_head = target[len(prefix) :]
        if up is not None:  # only for a branch checked out (``refs/heads/...``)
            remote, merge = up
            short = merge[11:] if merge.startswith("refs/heads/") else merge
            # branch.<name>.remote may be a url (with a token): stored redacted, never as a ref
            if remote == ".":
                meta.upstream, ref = redact_url(short), merge
            else:
                meta.upstream = f"{redact_url(remote)}/{redact_url(short)}"
                ref = f"refs/remotes/{remote}/{short}"
            if _valid_refname(ref):
                theirs = read_ref(git_dir, common_dir, ref, packed=packed)
                if theirs is not None and sha is not None:
                    meta.in_sync = theirs == sha
        # a stash is its reflog (``git stash`` always writes it, packed or not): one lookup
        meta.has_stash = _exists(common_dir + "/logs/refs/stash")
    except (OSError, GitMetaError, ValueError) as exc:
        meta.errors.append(f"refs: {_err(exc)}")
    meta.shallow = _exists(common_dir + "/shallow")
    try:
        mtime = os.stat(git_dir + "/FETCH_HEAD").st_mtime
        meta.last_fetch_at = datetime.fromtimestamp(int(mtime), tz=UTC)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        meta.errors.append(f"FETCH_HEAD: {_err(exc)}")
