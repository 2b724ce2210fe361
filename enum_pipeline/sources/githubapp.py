"""GitHub App authentication: an App's private key signs a JWT, the JWT buys an installation
token (an hour long), the token is renewed before it expires.

The installation's ``repository_selection`` (``all`` or ``selected``) is part of what a listing
could see: an installation granted *selected* repositories lists only those, so a repository
it does not list may simply not be granted. PyJWT (with ``cryptography``) signs; every request
goes through the source's ``HttpClient`` (retries, deadlines, secrets scrubbed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import jwt

from enum_pipeline.sources.http import HttpClient, PageError

#: A token is renewed when less than this is left of it (a page may be slow to answer).
RENEW_MARGIN_SECONDS = 300.0
#: GitHub accepts a JWT of at most 10 minutes; ``iat`` is back-dated for clock drift.
JWT_LIFETIME_SECONDS = 540
JWT_BACKDATE_SECONDS = 60


class AppAuthError(Exception):
    """The App's settings cannot give a token; the message names the setting."""


def load_private_key(private_key_env: str | None, private_key_file: str | None) -> str:
    """The App's PEM private key from an environment variable or a file, checked to parse;
    ValueError naming the setting (never its value) when it does not."""
    if bool(private_key_env) == bool(private_key_file):
        raise ValueError("set exactly one of private_key_env and private_key_file")
    if private_key_env:
        pem = os.environ.get(private_key_env, "")
        where = f"environment variable {private_key_env} (private_key_env)"
        if not pem.strip():
            raise ValueError(f"{where} is not set or empty")
    else:
        where = f"private_key_file {private_key_file}"
        try:
            pem = Path(os.path.expanduser(str(private_key_file))).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {where}: {getattr(err, 'strerror', err)}") from None
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{where} holds no PEM private key (unencrypted RSA expected)") from None
    return pem


@dataclass
class InstallationToken:
    """One installation token and what it was granted."""

    token: str
    expires_at: float  # epoch seconds
    repository_selection: str  # "all" or "selected"


class AppInstallation:
    """Installation tokens of one GitHub App installation, minted and renewed on demand."""

    def __init__(
        self,
        *,
        app_id: str,
        private_key: str,
        base_url: str,
        http: HttpClient,
        owner: str,
        owner_type: str,
        installation_id: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = str(app_id)
        self._key = private_key
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._owner = owner
        self._owner_type = owner_type
        self.installation_id = installation_id
        self._clock = clock
        self._current: InstallationToken | None = None
        self.minted = 0

    @property
    def principal(self) -> str:
        """Whom the requests are authenticated as: the App's installation."""
        return f"app:{self.app_id}/installation:{self.installation_id}"

    @property
    def repository_selection(self) -> str | None:
        """``all`` or ``selected`` once a token was minted."""
        return self._current.repository_selection if self._current else None

    def app_jwt(self) -> str:
        """A JWT signed with the App's key, valid for a few minutes."""
        now = int(self._clock())
        claims = {
            "iat": now - JWT_BACKDATE_SECONDS,
            "exp": now + JWT_LIFETIME_SECONDS,
            "iss": self.app_id,
        }
        return jwt.encode(claims, self._key, algorithm="RS256")

    def token(self) -> str:
        """A token with at least ``RENEW_MARGIN_SECONDS`` left, minted when needed."""
        current = self._current
        if current is None or current.expires_at - self._clock() < RENEW_MARGIN_SECONDS:
            current = self._current = self._mint()
            self._http.add_secret(current.token)
        return current.token

    def _app_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.app_jwt()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _find_installation(self) -> int:
        """The installation of the App on the owner (``GET /orgs/{org}/installation``)."""
        segment = "orgs" if self._owner_type == "org" else "users"
        url = f"{self._base_url}/{segment}/{quote(self._owner, safe='')}/installation"
        try:
            data = self._http.get_json(url, headers=self._app_headers(), expect=dict).data
        except PageError as exc:
            raise AppAuthError(self._explain(exc, "looking up its installation")) from None
        if not isinstance(data.get("id"), int):
            raise AppAuthError(f"{url} names no installation id")
        return int(data["id"])

    def _mint(self) -> InstallationToken:
        if self.installation_id is None:
            self.installation_id = self._find_installation()
        url = f"{self._base_url}/app/installations/{self.installation_id}/access_tokens"
        try:
            page = self._http.request_json("POST", url, headers=self._app_headers(), json_body={})
        except PageError as exc:
            raise AppAuthError(self._explain(exc, "minting an installation token")) from None
        data = page.data if isinstance(page.data, dict) else {}
        token, expires = data.get("token"), data.get("expires_at")
        if not isinstance(token, str) or not isinstance(expires, str):
            raise AppAuthError(f"the answer to POST {url} carries no token and expires_at")
        self.minted += 1
        return InstallationToken(
            token=token,
            expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp(),
            repository_selection=str(data.get("repository_selection") or "all"),
        )

    def _explain(self, exc: PageError, doing: str) -> str:
        """One sentence naming the setting most likely wrong."""
        if exc.status == 401:
            return (
                f"GitHub refused the App's JWT while {doing} (HTTP 401): the private key is not "
                f"the key of app_id {self.app_id}, or app_id is wrong: {exc.reason}"
            )
        if exc.status == 404 and self.installation_id is not None:
            return (
                f"installation_id {self.installation_id} is not an installation of app_id "
                f"{self.app_id} (HTTP 404 while {doing})"
            )
        if exc.status == 404:
            return (
                f"app_id {self.app_id} is not installed on {self._owner_type} {self._owner!r} "
                f"(HTTP 404 while {doing}): install it there, or set installation_id"
            )
        return f"GitHub App app_id {self.app_id}: {doing} failed: {exc.reason}"
