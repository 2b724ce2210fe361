"""What the code-host sources (GitHub, GitLab, Gitea) share: a checked base URL and owner, a
token read from the environment when a scan starts, one scope, and the retrying HTTP client."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from enum_pipeline.sources.http import USER_AGENT, HttpClient, read_token
from enum_pipeline.sources.remotes import redact_url

_OWNER_TYPES = {"org": "org", "orgs": "org", "organization": "org", "user": "user", "users": "user"}


def check_owner(owner: str, owner_type: str, host_name: str) -> tuple[str, str]:
    """``(owner, "org" | "user")`` from config values, or ValueError naming what is wrong."""
    owner = (owner or "").strip()
    if not owner or "/" in owner:
        raise ValueError(f"invalid {host_name} owner {owner!r}")
    kind = _OWNER_TYPES.get((owner_type or "").strip().lower())
    if kind is None:
        raise ValueError(f"owner_type must be 'org' or 'user', not {owner_type!r}")
    return owner, kind


class CodeHostSource:
    """Base of the code-host sources; a subclass sets ``kind``, ``host`` and ``scope_key``."""

    kind: str
    host: str
    scope_key: str
    log: logging.Logger

    def __init__(
        self,
        base_url: str,
        token_env: str | None,
        *,
        client: httpx.Client | None,
        max_retries: int,
        max_wait_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if urlsplit(base_url or "").scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, not {redact_url(base_url)!r}")
        self.base_url = base_url.rstrip("/")
        self.token_env = token_env
        self._http = HttpClient(
            client=client,
            max_retries=max_retries,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
            logger=self.log,
        )

    def scope_keys(self) -> list[str]:
        """The one scope this source reads."""
        return [self.scope_key]

    def auth_header(self, token: str) -> tuple[str, str]:  # pragma: no cover - per host
        """The header that carries ``token`` on this host."""
        raise NotImplementedError

    def _start(self, accept: str = "application/json") -> tuple[dict[str, str], str | None]:
        """Read the token (kept out of every log and error) and build the request headers."""
        token = read_token(self.token_env, logger=self.log)
        self._http.set_secrets([token])
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if token:
            name, value = self.auth_header(token)
            headers[name] = value
        return headers, token
