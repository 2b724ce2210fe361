"""Bounded reads of regular files, and the errors and text helpers of the git reader.

No read can hang or exhaust memory: every file is opened through ``open_regular`` (``stat``
first: a FIFO, socket or device is never opened; then ``O_NONBLOCK`` and ``fstat``, so one swapped
in meanwhile cannot block either), and every read has a bound (``MAX_SMALL_FILE`` for ``HEAD``,
ref files, ``.git`` and ``commondir`` files; ``MAX_CONFIG_FILE`` for ``config``;
``MAX_PACKED_REFS`` for ``packed-refs``; ``MAX_LOOSE_OBJECT`` for the HEAD commit's loose object).
A file over its bound is not read: ``RefusedFile`` names it and the bound. The filesystem walk
reads its few other files (``/proc/self/mountinfo``, Mercurial's ``hgrc``) the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime

#: ``HEAD``, a ref file, a ``.git`` (``gitdir:``) file, ``commondir``: a few bytes each
MAX_SMALL_FILE = 64 << 10
#: ``config`` (and Mercurial's ``hgrc``): large only with thousands of branch sections
MAX_CONFIG_FILE = 4 << 20
#: ``packed-refs``: about 800,000 refs; read whole (and once) when a ref is not loose
MAX_PACKED_REFS = 64 << 20
#: the loose object of the HEAD commit (compressed)
MAX_LOOSE_OBJECT = 64 << 20
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


class GitMetaError(Exception):
    """A git metadata file is missing or malformed."""


class RefusedFile(OSError):
    """A file not read: not a regular file (never opened), or larger than its bound."""


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10} KiB"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(path: str, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    raise RefusedFile(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file: not opened", path)


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open a regular file for reading; ``(fd, fstat)``. A FIFO, socket or device is never
    opened (``RefusedFile``), a directory raises ``IsADirectoryError``."""
    _check_regular(path, os.stat(path))
    fd = os.open(path, _O_READ)  # O_NONBLOCK: a FIFO swapped in since the stat cannot block
    try:
        st = os.fstat(fd)
        _check_regular(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _too_large(path: str, limit: int, size: int | None = None) -> RefusedFile:
    what = f"{size} bytes, " if size else ""
    return RefusedFile(errno.EFBIG, f"larger than the {_size(limit)} bound ({what}not read)", path)


def decode_text(raw: bytes) -> str:
    """Decode bytes from a git file to UTF-8-safe, NUL-free text (bad bytes as ``\\xNN``)."""
    text = raw.decode("utf-8", "backslashreplace")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def read_small(path: str, limit: int = MAX_SMALL_FILE) -> bytes:
    """Read a whole regular file of at most ``limit`` bytes with raw ``os`` calls (cheaper than
    ``open``). ``RefusedFile`` when it is not a regular file (then never opened) or is larger
    than ``limit`` (then not read; a file that grows past it while read is refused too)."""
    fd, st = open_regular(path)
    try:
        if st.st_size > limit:
            raise _too_large(path, limit, st.st_size)
        data = os.read(fd, min(65536, limit + 1))
        if len(data) == 65536 and limit >= 65536:
            chunks = [data]
            total = len(data)
            while total <= limit:
                more = os.read(fd, min(1 << 20, limit + 1 - total))
                if not more:
                    break
                chunks.append(more)
                total += len(more)
            data = b"".join(chunks)
        if len(data) > limit:
            raise _too_large(path, limit)
        return data
    finally:
        os.close(fd)


def _exists(path: str) -> bool:
    """``os.path.exists`` without its exception when the path is absent (the common case):
    ``access(F_OK)`` answers from the same path lookup, and False for any error, as ``exists``."""
    try:
        return os.access(path, os.F_OK)
    except ValueError:  # an embedded NUL, as os.path.exists
        return False


def safe_str(text: str) -> str:
    """Make any ``str`` (possibly holding surrogate escapes or NULs) encodable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return decode_text(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _err(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename if isinstance(exc.filename, str) else ""
        return safe_str(f"{exc.strerror}: {os.path.basename(name)}" if name else exc.strerror)
    return safe_str(str(exc)) or type(exc).__name__


@dataclass(slots=True)
class GitMeta:
    """What could be read about one git repository (see ``read_git_meta``)."""

    git_dir: str | None = None
    common_dir: str | None = None
    branch: str | None = None
    head_ref: str | None = None
    head_commit: str | None = None
    detached: bool = False
    unborn: bool = False
    worktree: bool = False
    bare: bool = False
    ref_storage: str | None = None
    remote_name: str | None = None
    remote_url: str | None = None  # already redacted
    remotes: dict[str, str] = field(default_factory=dict)  # name -> redacted url, file order
    remote_head: str | None = None  # the branch refs/remotes/<remote>/HEAD names (default branch)
    upstream: str | None = None  # e.g. "origin/main" (branch.<name>.remote + merge)
    in_sync: bool | None = None  # HEAD == upstream ref; None when either is unknown
    shallow: bool = False
    has_stash: bool = False
    last_fetch_at: datetime | None = None  # FETCH_HEAD mtime
    last_commit_at: datetime | None = None
    errors: list[str] = field(default_factory=list)
