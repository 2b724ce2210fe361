"""The git-config reader, and the remotes and upstream read with it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from enum_pipeline.sources.gitfiles import decode_text

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
