"""Git remote URLs: credential redaction and normalisation to ``host/owner/repo``.

Code-host sources and the filesystem source share these two functions so that a clone on disk and
the repository it was cloned from normalise to the same string.

Redaction rule (``redact_url``): in a ``scheme://userinfo@host/...`` URL the *whole* userinfo is
replaced with ``***`` when it holds a password (``user:secret@``) or when the scheme is not an SSH
one (over HTTP a lone user name is often a token: ``https://<token>@github.com/...``). A plain SSH
login (``ssh://git@host/...``) and scp-like addresses (``git@github.com:org/repo.git``) are kept.
Query parameters whose name suggests a secret (``token``, ``private_token``, ``password`` ...)
get the value ``***``. A remote-helper address (``<transport>::<address>``, e.g.
``hg::https://user:pw@host/repo``) has its address redacted by the same rules. Nothing else is
changed: an ``@`` in the path (``https://h/o/r@v1``) stays.
"""

from __future__ import annotations

import re

REDACTED = "***"

_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# git's remote helpers: "<transport>::<address>" (hg::https://..., persistent-https::...)
_HELPER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::(.*)$", re.DOTALL)
_SECRET_PARAM_RE = re.compile(
    r"(?i)(^|[?&;])((?:[a-z0-9_.-]*(?:token|secret|password|passwd|pwd|auth|key|sig|signature))"
    r"|access_token|private_token|credential[s]?)=([^&;#]*)"
)
# scp-like syntax: [user@]host:path, where host has no "/" and the path does not start with "//"
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/\[\]]+):(?P<path>(?!//).*)$")


def _split_authority(rest: str) -> tuple[str, str]:
    """Split ``authority`` from the remainder (``/path?query#frag``) of a URL without its scheme."""
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1 and i < end:
            end = i
    return rest[:end], rest[end:]


def redact_url(url: str) -> str:
    """Return ``url`` with any credentials it carries replaced by ``***`` (see module docstring)."""
    if not url:
        return url
    helper = _HELPER_RE.match(url)
    if helper is not None:
        return f"{helper.group(1)}::{redact_url(helper.group(2))}"
    m = _SCHEME_RE.match(url)
    if m is None:
        sm = _SCP_RE.match(url)
        if sm is not None and sm.group("user") and ":" in sm.group("user"):
            return f"{REDACTED}@{url[sm.start('host') :]}"  # "user:pass@host:path"
        return url  # scp-like address or local path: nothing secret in it
    scheme = m.group(1).lower()
    rest = url[m.end() :]
    authority, tail = _split_authority(rest)
    at = authority.rfind("@")
    if at != -1:
        userinfo, hostport = authority[:at], authority[at + 1 :]
        if ":" in userinfo or scheme not in _SSH_SCHEMES:
            authority = f"{REDACTED}@{hostport}"
    if "=" in tail and ("?" in tail or ";" in tail):
        path, sep, query = tail.partition("?")
        if sep:
            query = _SECRET_PARAM_RE.sub(lambda q: f"{q.group(1)}{q.group(2)}={REDACTED}", query)
            tail = path + sep + query
    return f"{url[: m.end()]}{authority}{tail}"


def _clean_path(path: str) -> str | None:
    path = path.split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts:
        return None
    last = parts[-1]
    if last.endswith(".git"):
        last = last[:-4]
        if not last:
            parts.pop()
            if not parts:
                return None
        else:
            parts[-1] = last
    return "/".join(parts)


def _clean_host(hostport: str) -> str | None:
    host = hostport
    if host.startswith("["):  # IPv6 literal, maybe with a port after "]"
        close = host.find("]")
        host = host[: close + 1] if close != -1 else host
    elif ":" in host:
        host = host.split(":", 1)[0]  # drop the port
    host = host.strip().rstrip(".").lower()
    return host or None


def normalize_remote(url: str) -> str | None:
    """Normalise a git remote to ``host/owner/repo`` (or ``host/group/sub/repo``).

    The host is lower-cased and its port, user and credentials dropped, so the HTTPS and SSH forms
    of one repository agree; the path keeps its case and loses a trailing ``.git`` and slashes.
    Accepts ``https://``, ``http://``, ``git://``, ``ssh://`` (``git+ssh://``) URLs and scp-like
    ``[user@]host:path``. Returns None for local paths, ``file://`` URLs and anything unparsable.
    """
    if not url:
        return None
    url = url.strip()
    helper = _HELPER_RE.match(url)
    if helper is not None:
        url = helper.group(2).strip()  # hg::https://host/repo is the repository at its address
    m = _SCHEME_RE.match(url)
    if m is not None:
        scheme = m.group(1).lower()
        if scheme == "file":
            return None
        authority, tail = _split_authority(url[m.end() :])
        hostport = authority.rsplit("@", 1)[-1]
        host = _clean_host(hostport)
        path = _clean_path(tail)
    else:
        if url.startswith(("/", "./", "../", "~")) or "\\" in url:
            return None  # local path (or a Windows path)
        sm = _SCP_RE.match(url)
        if sm is None:
            return None
        host_raw = sm.group("host")
        if len(host_raw) == 1 and host_raw.isalpha():
            return None  # "C:/path": a drive letter, not a host
        host = _clean_host(host_raw)
        path = _clean_path(sm.group("path"))
    if host is None or path is None:
        return None
    return f"{host}/{path}"
