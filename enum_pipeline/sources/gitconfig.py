"""The git-config reader (``parse_git_config``), and the remotes and upstream read with it.

One reader for every caller: ``remote_urls``, ``branch_upstream`` and ``remotes_and_upstream``
(what ``read_git_meta`` uses) ask it for the entries of the sections they need; it passes over
the lines of other sections and reads a plain value (no quote, escape or comment) with one
``strip``, so a config as git writes it costs about one line split and a few regex matches.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator

from enum_pipeline.sources.gitfiles import decode_text

_SECTION_RE = re.compile(r'[ \t]*\[[ \t]*([A-Za-z0-9.-]+)(?:[ \t]+"((?:[^"\\\n]|\\.)*)")?[ \t]*\]')
# a header as git writes it, which ``_header`` would read the same
_PLAIN_SECTION_RE = re.compile(r'\[([a-z0-9-]+)(?: "([^"\\\n]*)")?\]\Z')
_KEY_RE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9-]*)[ \t]*(=?)")
_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", "\\": "\\", '"': '"'}
_UNESCAPE_SUB_RE = re.compile(r"\\(.)")
_PLAIN_VALUE = re.compile(r'[\\"#;]')  # what only _parse_value reads right


def _parse_value(text: str, more: Iterator[str]) -> str:
    """Parse a config value starting in ``text``, continuing on the lines ``more`` gives."""
    if _PLAIN_VALUE.search(text) is None:
        return text.strip(" \t\r")  # no quote, escape, comment or continuation
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
        nxt = next(more, None) if continued else None
        if nxt is None:
            return "".join(out[:keep])
        text = nxt


def _decode(data: bytes) -> tuple[str, bool]:
    """``data`` as text, and whether it needs ``_tidy`` (invalid UTF-8 or a NUL): undecodable
    bytes are kept as surrogate escapes through parsing, so they are never read as escapes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True
    return text, "\x00" in text


def _tidy(text: str | None) -> str | None:
    """A parsed string as ``decode_text`` makes it: bad bytes as ``\\xNN``, NUL as ``\\x00``."""
    if text is None:
        return None
    return decode_text(text.encode("utf-8", "surrogateescape"))


def _header(line: str) -> tuple[str, str | None, str] | None:
    """``(section, subsection, rest of the line)`` of a section header; None when malformed."""
    m = _SECTION_RE.match(line)
    if m is None:
        return None
    name, sub = m.groups()
    if sub is not None:
        if "\\" in sub:
            sub = _UNESCAPE_SUB_RE.sub(r"\1", sub)
    elif "." in name:
        name, sub = name.split(".", 1)
        sub = sub.lower()
    return name.lower(), sub, line[m.end() :]


def parse_git_config(
    data: bytes, sections: Container[str | tuple[str, str]] | None = None
) -> Iterator[tuple[str, str | None, str, str | None]]:
    """Yield ``(section, subsection, key, value)`` entries of a git config file.

    Section and key names are lower-cased; subsections keep their case (old-style
    ``[section.sub]`` subsections are lower-cased, as git does). A key without ``=`` has value
    None (boolean true). Malformed lines are skipped; ``include`` directives are not followed.
    Undecodable bytes and NULs come out as ``\\xNN`` (as ``decode_text``).

    ``sections``: yield only the entries of these sections, named ``"remote"`` (lower-case) or
    ``("branch", "main")`` (one subsection); the lines of the others are passed over without
    being parsed, which keeps reading the remotes of a config cheap. This is the one git-config
    reader: every caller reads a config through it.
    """
    text, untidy = _decode(data)
    entries = _entries(text, sections)
    if untidy:
        return ((section, _tidy(sub), key, _tidy(value)) for section, sub, key, value in entries)
    return entries


def _entries(
    text: str, sections: Container[str | tuple[str, str]] | None
) -> Iterator[tuple[str, str | None, str, str | None]]:
    section: str | None = None
    sub: str | None = None
    wanted = False  # entries of ``section`` are yielded
    plain_header = _PLAIN_SECTION_RE.match  # (locals: this loop is on the scanner's path)
    plain = _PLAIN_VALUE.search
    lines = iter(text.split("\n"))
    for line in lines:
        s = line.lstrip(" \t\r")
        if not s or s[0] in "#;":
            continue
        if s[0] == "[":
            m = plain_header(line)
            if m is not None:  # as git writes it: nothing to lower-case, unescape or split
                section, sub = m.groups()
                wanted = sections is None or section in sections or (section, sub) in sections
                continue
            header = _header(line)
            if header is None:
                section = None  # ignore keys until the next well-formed header
                continue
            section, sub, line = header
            wanted = sections is None or section in sections or (section, sub) in sections
            s = line.strip(" \t\r")
            if not s or s[0] in "#;":
                continue
        if section is None or not wanted and "\\" not in line:
            continue  # (a line with a backslash may continue on the next: parsed, not yielded)
        key, eq, rest = line.partition("=")
        key = key.strip(" \t")
        if eq and key.isalnum() and key.isascii() and key[0].isalpha() and plain(rest) is None:
            value = rest.strip(" \t\r")  # ``key = value`` as git writes it
        else:
            entry = _key_value(line, lines)
            if entry is None:
                continue
            key, value = entry
        if wanted:
            yield section, sub, key.lower(), value


def _key_value(line: str, lines: Iterator[str]) -> tuple[str, str | None] | None:
    """The key and value of a line (value None: a boolean key); None when it is not one."""
    m = _KEY_RE.match(line)
    if m is None:
        return None
    rest = line[m.end() :]
    if m.group(2):
        return m.group(1), _parse_value(rest, lines)
    r = rest.strip(" \t\r")
    if r and r[0] not in "#;":
        return None
    return m.group(1), None


_REMOTE = frozenset({"remote"})


def remote_urls(data: bytes) -> dict[str, str]:
    """Map remote name to its (first) ``url`` from config bytes, in file order. Not redacted."""
    if b"remote" not in data.lower():
        return {}
    urls: dict[str, str] = {}
    for _, sub, key, value in parse_git_config(data, _REMOTE):
        if key == "url" and sub is not None and value:
            urls.setdefault(sub, value)
    return urls


def branch_upstream(data: bytes, branch: str) -> tuple[str, str] | None:
    """``(branch.<branch>.remote, branch.<branch>.merge)`` from config bytes; None unless both
    are set (the last value of each wins, as in git)."""
    if b"branch" not in data.lower():
        return None
    found: dict[str, str] = {}
    for _, _, key, value in parse_git_config(data, {("branch", branch)}):
        if key in ("remote", "merge") and value:
            found[key] = value
    return _upstream(found)


def _upstream(found: dict[str, str]) -> tuple[str, str] | None:
    if found.get("remote") and found.get("merge"):
        return found["remote"], found["merge"]
    return None


def remotes_and_upstream(
    data: bytes, branch: str | None
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """``remote_urls(data)`` and ``branch_upstream(data, branch)`` (None without a branch) from
    one pass over the config."""
    wanted = {"remote", ("branch", branch)} if branch is not None else _REMOTE
    urls: dict[str, str] = {}
    found: dict[str, str] = {}
    for section, sub, key, value in parse_git_config(data, wanted):
        if not value:
            continue
        if section == "remote":
            if key == "url" and sub is not None:
                urls.setdefault(sub, value)
        elif key == "remote" or key == "merge":  # of [branch "<branch>"]: the only other one
            found[key] = value
    return urls, _upstream(found)


def pick_remote(urls: dict[str, str]) -> tuple[str, str] | None:
    """``origin`` when present, else the first remote with a url."""
    if "origin" in urls:
        return "origin", urls["origin"]
    for name, url in urls.items():
        return name, url
    return None
