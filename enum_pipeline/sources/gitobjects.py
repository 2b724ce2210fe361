"""Git objects: the committer time of the HEAD commit.

The commit is read from its loose object file when there is one; packed commits are found
through the pack's ``.idx`` (version 2) and inflated in place; only deltified commits, v1
indexes, alternates and multi-pack-index-only layouts fall back to dulwich. Before dulwich reads
objects, every file it could open is checked as ``open_regular`` would.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import zlib
from collections.abc import Callable
from datetime import UTC, datetime

from enum_pipeline.sources.gitfiles import (
    MAX_CONFIG_FILE,
    MAX_LOOSE_OBJECT,
    GitMetaError,
    _check_regular,
    _exists,
    decode_text,
    open_regular,
    read_small,
)

_IDX_READ_WHOLE = 1 << 20  # pack indexes up to this size are read, larger ones memory-mapped


class _NeedFallback(Exception):
    """The fast object reader cannot handle this layout; dulwich must."""


def _committer_in(buf: bytes, loose: bool) -> datetime | None:
    """Committer time from the start of an inflated commit; None when ``buf`` is too short."""
    if loose and not buf.startswith(b"commit "):
        if b"\x00" in buf[:32] or len(buf) >= 32:
            kind = decode_text(buf[:16].split(b" ")[0])
            raise GitMetaError(f"HEAD object is a {kind!r}, not a commit")
        return None
    pos = buf.find(b"\ncommitter ")
    eol = buf.find(b"\n", pos + 1) if pos != -1 else -1
    if eol == -1:
        header_end = buf.find(b"\n\n")
        if header_end != -1 and pos == -1:
            raise GitMetaError("commit object has no committer line")
        return None
    parts = buf[pos + 11 : eol].rsplit(b" ", 2)
    try:
        return datetime.fromtimestamp(int(parts[-2]), tz=UTC)
    except (ValueError, IndexError, OverflowError, OSError) as exc:
        raise GitMetaError("malformed committer timestamp") from exc


def _committer_time(more: Callable[[], bytes], loose: bool) -> datetime:
    """Inflate a commit object just far enough to read its committer timestamp.

    ``more`` returns the next compressed bytes (b"" at the end); ``loose`` objects start with a
    ``commit <size>\\0`` header, packed ones do not.
    """
    d = zlib.decompressobj()
    buf = b""
    while True:
        if d.eof:
            raise GitMetaError("commit object has no committer line")
        chunk = d.unconsumed_tail or more()
        if not chunk:
            raise GitMetaError("truncated commit object")
        buf += d.decompress(chunk, 16384)
        found = _committer_in(buf, loose)
        if found is not None:
            return found
        if len(buf) > (1 << 24):
            raise GitMetaError("commit header too long")


def _loose_commit_time(objects_dir: str, sha: str) -> datetime | None:
    try:
        data = read_small(f"{objects_dir}/{sha[:2]}/{sha[2:]}", MAX_LOOSE_OBJECT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    # common case: a small object whose header fits the first inflated block
    d = zlib.decompressobj()
    found = _committer_in(d.decompress(data, 16384), True)
    if found is not None:
        return found
    chunks = iter((data,))
    return _committer_time(lambda: next(chunks, b""), loose=True)


def _idx_lookup(idx_path: str, binsha: bytes) -> int | None:
    """Offset of ``binsha`` in a version-2 pack index, or None when it is not there.

    Small indexes are read whole (one ``read``); large ones are memory-mapped.
    """
    fd, st = open_regular(idx_path)
    try:
        size = st.st_size
        if size <= _IDX_READ_WHOLE:
            data = os.read(fd, size)
            return _idx_search(data, len(data), binsha)
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            return _idx_search(mm, len(mm), binsha)
    finally:
        os.close(fd)


def _idx_search(mm: bytes | mmap.mmap, size: int, binsha: bytes) -> int | None:
    if size < 1032:
        raise _NeedFallback("short or empty pack index")
    if mm[:8] != b"\xfftOc\x00\x00\x00\x02":
        raise _NeedFallback("pack index is not version 2")
    hl = len(binsha)
    b = binsha[0]
    lo = int.from_bytes(mm[8 + 4 * (b - 1) : 8 + 4 * b], "big") if b else 0
    hi = int.from_bytes(mm[8 + 4 * b : 12 + 4 * b], "big")
    n = int.from_bytes(mm[1028:1032], "big")
    base = 1032
    if base + n * (hl + 8) > size or hi > n or lo > hi:
        raise GitMetaError("truncated or corrupt pack index")
    while lo < hi:
        mid = (lo + hi) // 2
        cand = mm[base + mid * hl : base + (mid + 1) * hl]
        if cand < binsha:
            lo = mid + 1
        elif cand > binsha:
            hi = mid
        else:
            at = base + n * hl + n * 4 + mid * 4
            off = int.from_bytes(mm[at : at + 4], "big")
            if off & 0x80000000:
                at = base + n * hl + n * 8 + (off & 0x7FFFFFFF) * 8
                if at + 8 > size:
                    raise GitMetaError("corrupt pack index large offset")
                off = int.from_bytes(mm[at : at + 8], "big")
            return off
    return None


def _packed_commit_time_at(pack_path: str, offset: int) -> datetime:
    fd, _ = open_regular(pack_path)
    try:
        head = os.pread(fd, 8192, offset)
        if not head:
            raise GitMetaError("pack offset past end of pack")
        c = head[0]
        kind = (c >> 4) & 7
        i = 1
        while c & 0x80:
            if i >= len(head):
                raise GitMetaError("truncated pack object header")
            c = head[i]
            i += 1
        if kind in (6, 7):
            raise _NeedFallback("deltified commit")
        if kind != 1:
            raise GitMetaError(f"HEAD object has pack type {kind}, not a commit")
        pos = offset + len(head)
        first = [head[i:]]

        def more() -> bytes:
            nonlocal pos
            if first:
                return first.pop()
            chunk = os.pread(fd, 65536, pos)
            pos += len(chunk)
            return chunk

        return _committer_time(more, loose=False)
    finally:
        os.close(fd)


def _packed_commit_time(objects_dir: str, sha: str) -> datetime | None:
    pack_dir = objects_dir + "/pack"
    try:
        names = os.listdir(pack_dir)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    binsha = bytes.fromhex(sha)
    for name in names:
        if not name.endswith(".idx"):
            continue
        off = _idx_lookup(f"{pack_dir}/{name}", binsha)
        if off is not None:
            return _packed_commit_time_at(f"{pack_dir}/{name[:-4]}.pack", off)
    if os.path.exists(objects_dir + "/info/alternates") or os.path.exists(
        pack_dir + "/multi-pack-index"
    ):
        raise _NeedFallback("alternates or multi-pack-index")
    return None


def _check_object_files(objects_dir: str, sha: str, depth: int = 0) -> None:
    """Refuse (``RefusedFile``) an object store holding a file dulwich could open that is not a
    regular file: the loose object, ``info/*`` (alternates, commit-graph, packs), ``pack/*``,
    and the same in every alternate (5 levels, as git)."""
    paths = [f"{objects_dir}/{sha[:2]}/{sha[2:]}"]
    for sub in ("info", "pack"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            paths += [f"{objects_dir}/{sub}/{n}" for n in os.listdir(f"{objects_dir}/{sub}")]
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            _check_regular(path, st)
    alternates = objects_dir + "/info/alternates"
    if depth >= 5 or not _exists(alternates):
        return
    for line in read_small(alternates, MAX_CONFIG_FILE).split(b"\n"):
        line = line.strip()
        if line and not line.startswith(b"#"):
            alt = os.path.join(objects_dir, os.fsdecode(line))
            if os.path.isdir(alt):
                _check_object_files(alt, sha, depth + 1)


def _dulwich_commit_time(objects_dir: str, sha: str) -> datetime | None:
    from dulwich.object_store import DiskObjectStore

    _check_object_files(objects_dir, sha)  # dulwich opens files with plain open()

    store = DiskObjectStore(objects_dir)
    try:
        try:
            obj = store[sha.encode("ascii")]
        except KeyError:
            return None
        if obj.type_name != b"commit":
            raise GitMetaError(f"HEAD object is a {obj.type_name.decode()}, not a commit")
        return datetime.fromtimestamp(obj.commit_time, tz=UTC)  # type: ignore[attr-defined]
    finally:
        store.close()


def commit_time(objects_dir: str, sha: str) -> datetime | None:
    """Committer time (aware, UTC) of commit ``sha``; None when the object is nowhere to be found.

    Loose object first, then the packs (fast ``.idx`` v2 lookup), then dulwich for what the fast
    path does not handle. Raises ``GitMetaError``/``OSError``/``zlib.error`` on corrupt data.
    """
    found = _loose_commit_time(objects_dir, sha)
    if found is not None:
        return found
    try:
        return _packed_commit_time(objects_dir, sha)
    except _NeedFallback:
        return _dulwich_commit_time(objects_dir, sha)
