"""Read git metadata straight from files: no ``git`` process, no dulwich ``Repo`` on the hot path.

``read_git_meta`` reads ``HEAD``, one ref (loose file, else ``packed-refs``), ``config`` (for the
remotes and the branch's upstream) and the HEAD commit object (for its committer time); then the
cheap state of a checkout, each one file lookup and never an index walk: the remote's ``HEAD``
(its default branch), the upstream ref (in sync or not), ``shallow``, ``refs/stash`` and the
``FETCH_HEAD`` time. The commit is read from its loose
object file when there is one; packed commits are found through the pack's ``.idx`` (version 2)
and inflated in place; only deltified commits, v1 indexes, alternates and multi-pack-index-only
layouts fall back to dulwich. Nothing here raises on malformed input: every problem is collected
in ``GitMeta.errors`` and whatever could be read is returned.

No read can hang or exhaust memory: every file is opened through ``open_regular`` (``stat``
first: a FIFO, socket or device is never opened; then ``O_NONBLOCK`` and ``fstat``, so one swapped
in meanwhile cannot block either), and every read has a bound (``MAX_SMALL_FILE`` for ``HEAD``,
ref files, ``.git`` and ``commondir`` files; ``MAX_CONFIG_FILE`` for ``config``;
``MAX_PACKED_REFS`` for ``packed-refs``; ``MAX_LOOSE_OBJECT`` for the HEAD commit's loose object).
A file over its bound is not read: ``RefusedFile`` names it and the bound, and the repository gets
that error. Before dulwich reads objects, every file it could open is checked the same way.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from enum_pipeline.sources.remotes import redact_url

#: ``HEAD``, a ref file, a ``.git`` (``gitdir:``) file, ``commondir``: a few bytes each
MAX_SMALL_FILE = 64 << 10
#: ``config`` (and Mercurial's ``hgrc``): large only with thousands of branch sections
MAX_CONFIG_FILE = 4 << 20
#: ``packed-refs``: about 800,000 refs; read whole (and once) when a ref is not loose
MAX_PACKED_REFS = 64 << 20
#: the loose object of the HEAD commit (compressed)
MAX_LOOSE_OBJECT = 64 << 20
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_IDX_READ_WHOLE = 1 << 20  # pack indexes up to this size are read, larger ones memory-mapped
_HEX = frozenset(b"0123456789abcdef")
_SHA_LENGTHS = (40, 64)  # SHA-1 and SHA-256 repositories
# refs living in the per-worktree git dir rather than the common dir
_PER_WORKTREE_PREFIXES = ("refs/worktree/", "refs/bisect/", "refs/rewritten/")


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


# ------------------------------------------------------------------------------------- config

_SECTION_RE = re.compile(r'[ \t]*\[[ \t]*([A-Za-z0-9.-]+)(?:[ \t]+"((?:[^"\\\n]|\\.)*)")?[ \t]*\]')
_KEY_RE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9-]*)[ \t]*(=?)")
_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", "\\": "\\", '"': '"'}
_UNESCAPE_SUB_RE = re.compile(r"\\(.)")


def _parse_value(lines: list[str], li: int, text: str) -> tuple[str, int]:
    """Parse a config value starting in ``text`` (continuing on later lines); return it and li."""
    out: list[str] = []
    keep = 0  # length of ``out`` up to the last char that is not trailing unquoted whitespace
    quote = False
    started = False
    while True:
        i = 0
        n = len(text)
        continued = False
        while i < n:
            c = text[i]
            if c == "\\":
                if i + 1 >= n:
                    continued = True
                    break
                out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                keep = len(out)
                started = True
                i += 2
                continue
            if c == '"':
                quote = not quote
                started = True
                keep = len(out)
                i += 1
                continue
            if not quote:
                if c in "#;":
                    break
                if c in " \t\r":
                    if started:
                        out.append(c)
                    i += 1
                    continue
            out.append(c)
            keep = len(out)
            started = True
            i += 1
        if not continued or li >= len(lines):
            return "".join(out[:keep]), li
        text = lines[li]
        li += 1


def parse_git_config(data: bytes) -> Iterator[tuple[str, str | None, str, str | None]]:
    """Yield ``(section, subsection, key, value)`` entries of a git config file.

    Section and key names are lower-cased; subsections keep their case (old-style
    ``[section.sub]`` subsections are lower-cased, as git does). A key without ``=`` has value
    None (boolean true). Malformed lines are skipped; ``include`` directives are not followed.
    """
    lines = decode_text(data).split("\n")
    section: str | None = None
    sub: str | None = None
    li = 0
    while li < len(lines):
        line = lines[li]
        li += 1
        s = line.lstrip(" \t\r")
        if not s or s[0] in "#;":
            continue
        if s[0] == "[":
            m = _SECTION_RE.match(line)
            if m is None:
                section = None  # ignore keys until the next well-formed header
                continue
            name, sub = m.group(1), m.group(2)
            if sub is not None:
                sub = _UNESCAPE_SUB_RE.sub(r"\1", sub)
            elif "." in name:
                name, sub = name.split(".", 1)
                sub = sub.lower()
            section = name.lower()
            line = line[m.end() :]
            s = line.strip(" \t\r")
            if not s or s[0] in "#;":
                continue
        if section is None:
            continue
        m = _KEY_RE.match(line)
        if m is None:
            continue
        key = m.group(1).lower()
        rest = line[m.end() :]
        if not m.group(2):
            r = rest.strip(" \t\r")
            if not r or r[0] in "#;":
                yield section, sub, key, None
            continue
        value, li = _parse_value(lines, li, rest)
        yield section, sub, key, value


_FAST_REMOTE_HDR = re.compile(
    r'^[ \t]*\[[ \t]*remote[ \t]+"([^"\\\n]*)"[ \t]*\][ \t]*$', re.M | re.I
)
_ANY_REMOTE_HDR = re.compile(rb"\[[ \t]*remote")
_NEXT_SECTION = re.compile(r"^[ \t]*\[", re.M)
_FAST_URL = re.compile(r"^[ \t]*url[ \t]*=[ \t]*([^\n]*?)[ \t]*$", re.M | re.I)


def _remote_urls_fast(data: bytes, low: bytes) -> dict[str, str] | None:
    """Regex fast path for plain configs; None when the full parser is needed."""
    if b"\\" in data or b"\r" in data:
        return None  # escapes or continuations, or CRLF: let the real parser decide
    text = decode_text(data)
    headers = list(_FAST_REMOTE_HDR.finditer(text))
    if len(headers) != len(_ANY_REMOTE_HDR.findall(low)):
        return None  # old-style [remote.x], key on the header line, ...
    urls: dict[str, str] = {}
    for hdr in headers:
        nxt = _NEXT_SECTION.search(text, hdr.end())
        body = text[hdr.end() : nxt.start() if nxt else len(text)]
        m = _FAST_URL.search(body)
        if m is None:
            continue
        value = m.group(1)
        if '"' in value or "#" in value or ";" in value:
            return None
        if value:
            urls.setdefault(hdr.group(1), value)
    return urls


def remote_urls(data: bytes) -> dict[str, str]:
    """Map remote name to its (first) ``url`` from config bytes, in file order. Not redacted."""
    low = data.lower()
    if b"remote" not in low:
        return {}
    fast = _remote_urls_fast(data, low)
    if fast is not None:
        return fast
    urls: dict[str, str] = {}
    for section, sub, key, value in parse_git_config(data):
        if section == "remote" and key == "url" and sub is not None and value:
            urls.setdefault(sub, value)
    return urls


def _branch_upstream_fast(data: bytes, branch: str) -> dict[str, str] | None:
    """``remote``/``merge`` of ``[branch "<branch>"]`` in a plain config as git writes it; None
    when the layout needs the full parser."""
    if b"\\" in data or b"\r" in data:
        return None
    low = data.lower()
    headers = data.count(b'\n[branch "') + data.startswith(b'[branch "')
    if low.count(b"branch") != data.count(b"[branch ") or low.count(b"[branch") != headers:
        return None  # old-style or indented headers, "branch" in another place: parse properly
    hdr = b'[branch "' + os.fsencode(branch) + b'"]'
    found: dict[str, str] = {}
    pos = data.find(hdr)
    while pos != -1:
        if pos and data[pos - 1] != 0x0A:
            return None
        eol = data.find(b"\n", pos)
        eol = len(data) if eol == -1 else eol
        if data[pos + len(hdr) : eol].strip(b" \t"):
            return None  # a key on the header line
        end = data.find(b"\n[", eol)
        for line in data[eol : len(data) if end == -1 else end].split(b"\n"):
            key, eq, value = line.partition(b"=")
            key = key.strip(b" \t").lower()
            if key in (b"remote", b"merge") and eq:
                value = value.strip(b" \t")
                if b'"' in value or b"#" in value or b";" in value:
                    return None
                found[key.decode("ascii")] = decode_text(value)
        pos = data.find(hdr, eol)
    return found


def branch_upstream(data: bytes, branch: str) -> tuple[str, str] | None:
    """``(branch.<branch>.remote, branch.<branch>.merge)`` from config bytes; None unless both
    are set (the last value of each wins, as in git)."""
    if b"ranch" not in data:
        return None
    found = _branch_upstream_fast(data, branch)
    if found is None:
        found = {}
        for section, sub, key, value in parse_git_config(data):
            if section == "branch" and sub == branch and key in ("remote", "merge") and value:
                found[key] = value
    if found.get("remote") and found.get("merge"):
        return found["remote"], found["merge"]
    return None


_PLAIN_HDR = re.compile(r'\[[ \t]*([A-Za-z0-9-]+)(?:[ \t]+"([^"\n]*)")?[ \t]*\][ \t]*\Z')


def remotes_and_upstream(
    data: bytes, branch: str | None
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """``remote_urls(data)`` and ``branch_upstream(data, branch)`` (None without a branch) from
    one pass over a config as git writes it; the two parsers when its layout needs them."""
    fast = _config_one_pass(data, branch) if b"emote" in data or b"ranch" in data else None
    if fast is not None:
        urls, found = fast
        up = (found["remote"], found["merge"]) if "remote" in found and "merge" in found else None
        return urls, up
    return remote_urls(data), (branch_upstream(data, branch) if branch is not None else None)


def _plain_text(data: bytes) -> str | None:
    """``data`` as text when it is valid UTF-8 without backslashes, CR or NUL; else None."""
    if b"\\" in data or b"\r" in data or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _config_one_pass(data: bytes, branch: str | None) -> tuple[dict[str, str], dict] | None:
    """Remote urls and ``branch.<branch>.remote/merge`` of a plain config: one line each, no
    escapes, quotes, comments after values, empty values, CR, NUL, continuations or old-style
    headers. None when anything else is there (``remote_urls``/``branch_upstream`` decide)."""
    text = _plain_text(data)
    if text is None:
        return None
    urls: dict[str, str] = {}
    found: dict[str, str] = {}
    remote: str | None = None  # the remote whose section this is
    in_branch = False  # in [branch "<branch>"]
    for line in text.split("\n"):
        s = line.lstrip(" \t")
        if not s or s[0] in "#;":
            continue
        if s[0] == "[":
            m = _PLAIN_HDR.match(s)
            if m is None:
                return None
            name, sub = m.group(1).lower(), m.group(2)
            remote = sub if name == "remote" and sub is not None else None
            in_branch = name == "branch" and sub is not None and sub == branch
            continue
        if remote is None and not in_branch:
            continue
        key, eq, value = s.partition("=")
        key = key.rstrip(" \t").lower()
        if remote is not None and key != "url" or in_branch and key not in ("remote", "merge"):
            continue
        if '"' in value or "#" in value or ";" in value:
            return None
        if not eq:
            continue  # a boolean: no url, remote or merge
        value = value.strip(" \t")
        if not value:
            return None  # an empty value: the earlier parsers' answers differ, theirs stand
        if remote is not None:
            urls.setdefault(remote, value)
        else:
            found[key] = value
    return urls, found


def pick_remote(urls: dict[str, str]) -> tuple[str, str] | None:
    """``origin`` when present, else the first remote with a url."""
    if "origin" in urls:
        return "origin", urls["origin"]
    for name, url in urls.items():
        return name, url
    return None


# ------------------------------------------------------------------------------------ objects


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


# ------------------------------------------------------------------------------------ summary


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


def read_git_meta(
    dotgit: str,
    *,
    is_dir: bool | None = None,
    bare: bool = False,
) -> GitMeta:
    """Read HEAD, branch, head commit, remotes, last commit time and a checkout's cheap state.

    ``dotgit`` is the ``.git`` entry of a work tree (directory or ``gitdir:`` file), or the
    repository folder itself when ``bare``. Never raises: problems are listed in ``errors``.
    """
    meta = GitMeta(bare=bare)
    if bare or is_dir:
        git_dir = common_dir = dotgit
    else:
        try:
            git_dir, common_dir, meta.worktree = resolve_git_dir(dotgit, is_dir)
        except (OSError, GitMetaError, ValueError) as exc:
            meta.errors.append(f"gitdir: {_err(exc)}")
            return meta
    meta.git_dir = git_dir
    meta.common_dir = common_dir
    packed = PackedRefs(common_dir)
    sha = meta.head_commit = _read_head(meta, git_dir, common_dir, packed)
    head = meta.head_ref
    branch = head[11:] if not bare and head is not None and head.startswith("refs/heads/") else None
    up = _read_remote(meta, common_dir, branch)
    if not bare:
        _checkout_state(meta, git_dir, common_dir, up, sha, packed)
    if sha is not None:
        try:
            meta.last_commit_at = commit_time(common_dir + "/objects", sha)
            if meta.last_commit_at is None:
                meta.errors.append(f"HEAD commit {sha} not found in the object store")
        except Exception as exc:  # corrupt objects must never abort a scan
            meta.errors.append(f"HEAD commit: {_err(exc)}")
    return meta


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


def _read_remote(meta: GitMeta, common_dir: str, branch: str | None) -> tuple[str, str] | None:
    """The remotes (redacted) and the one the repository was most likely cloned from; returns
    ``branch``'s upstream ``(remote, merge)`` from the same config read (None: none, or no
    ``branch``)."""
    up = None
    try:
        config = read_small(common_dir + "/config", MAX_CONFIG_FILE)
        urls, up = remotes_and_upstream(config, branch)
        picked = pick_remote(urls)
        if picked is not None:  # each url (and name: any git value may be a url) redacted once
            meta.remotes = {redact_url(name): redact_url(url) for name, url in urls.items()}
            meta.remote_name = picked[0]
            meta.remote_url = redact_url(picked[1])
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        meta.errors.append(f"config: {_err(exc)}")
    return up


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
