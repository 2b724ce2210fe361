"""Path strings and mount points of the filesystem walk.

POSIX paths are bytes; the record needs UTF-8 text (PostgreSQL). ``escape_path`` turns
undecodable bytes (surrogate escapes from ``os.fsdecode``) into ``\\xNN`` and doubles every
literal backslash, so distinct paths always give distinct strings and ``unescape_path`` recovers
the original path exactly. ``_read_mount_points`` reads ``/proc/self/mountinfo`` (bounded, as
every file the scanner reads).
"""

from __future__ import annotations

import os

from enum_pipeline.sources.gitfiles import read_small


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


def _describe(exc: OSError) -> str:
    name = exc.filename if isinstance(exc.filename, str) else None
    what = exc.strerror or type(exc).__name__
    return f"{what}: {escape_path(name)}" if name else what
