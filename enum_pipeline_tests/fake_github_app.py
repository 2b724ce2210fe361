"""A loopback GitHub that also speaks GitHub App authentication.

``GitHubWithApp`` adds to the REST fake (``fake_codehosts.GitHubApp``) what an App uses:
``GET /orgs/{org}/installation`` and ``POST /app/installations/{id}/access_tokens``, both
authenticated by a JWT whose RS256 signature, ``iss``, ``iat`` and ``exp`` are checked with the
App's public key (as GitHub does: at most 10 minutes long); installation tokens that expire; and
``GET /installation/repositories`` (``total_count`` + ``repositories``, paged by ``Link``) listing
every repository of the account, or only the granted ones of a *selected* installation.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enum_pipeline_tests.fake_codehosts import GitHubApp, RecordedRequest, Reply, _link

#: GitHub refuses a JWT whose lifetime (exp - iat) is longer than this.
MAX_JWT_SECONDS = 600 + 60


def new_key_pair() -> tuple[str, str]:
    """A fresh RSA key pair as PEM text: (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class GitHubWithApp(GitHubApp):
    """The REST fake plus one App installed on one account."""

    def __init__(
        self,
        *,
        app_id: int,
        public_key: str,
        account: str,
        installation_id: int = 7001,
        token_seconds: float = 3600.0,
        **kw: Any,
    ) -> None:
        super().__init__(token=None, token_owner=None, **kw)
        self.app_id = app_id
        self.public_key = public_key
        self.account = account
        self.installation_id = installation_id
        self.token_seconds = token_seconds
        self.granted: set[int] | None = None  # None: every repository ("all")
        self.tokens: dict[str, float] = {}  # installation token -> expiry (epoch seconds)
        self.jwt_errors: list[str] = []

    @property
    def selection(self) -> str:
        return "all" if self.granted is None else "selected"

    def grant(self, repo_ids: set[int] | None) -> None:
        """Grant the installation these repositories only (None: all of them)."""
        with self.lock:
            self.granted = None if repo_ids is None else set(repo_ids)

    def _visible(self) -> list[dict[str, Any]]:
        owner = self.owners[self.account.lower()]
        return [r for r in owner.repos if self.granted is None or r["id"] in self.granted]

    def _jwt_problem(self, req: RecordedRequest) -> str | None:
        value = req.headers.get("authorization", "")
        if not value.startswith("Bearer "):
            return "no JWT"
        try:
            claims = jwt.decode(
                value[len("Bearer ") :],
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=0,
            )
        except jwt.PyJWTError as exc:
            return f"A JSON web token could not be decoded ({type(exc).__name__})"
        if str(claims["iss"]) != str(self.app_id):
            return f"'Issuer' claim ('iss') must be the app id {self.app_id}"
        if claims["exp"] - claims["iat"] > MAX_JWT_SECONDS:
            return "'Expiration time' claim ('exp') is too far in the future"
        return None

    def _installation_token_ok(self, req: RecordedRequest) -> bool:
        sent = self.credential(req)
        return sent is not None and self.tokens.get(sent, 0) > time.time()

    def authenticated(self, req: RecordedRequest) -> bool:
        return self._installation_token_ok(req)

    def route(self, req: RecordedRequest, host: str) -> Reply:
        path = req.path.split("?", 1)[0][len(self.prefix) :]
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["app", "installations"] or parts[-1:] == ["installation"]:
            problem = self._jwt_problem(req)
            if problem is not None:
                self.jwt_errors.append(problem)
                return Reply.json(401, {"message": problem})
            if req.method == "POST" and len(parts) == 4 and parts[3] == "access_tokens":
                return self._mint(parts[2])
            if len(parts) == 3 and parts[0] in ("orgs", "users"):
                if parts[1].lower() != self.account.lower():
                    return Reply.json(404, {"message": "Not Found"})
                return Reply.json(200, {"id": self.installation_id, "app_id": self.app_id})
            return Reply.json(404, {"message": "Not Found"})
        if not self._installation_token_ok(req) and self.credential(req) is not None:
            return Reply.json(401, {"message": "Bad credentials"})
        if parts == ["installation", "repositories"]:
            return self._installation_repos(req, host)
        if len(parts) == 2 and parts[0] == "repositories":
            return self.by_id(req, parts[1], self._visible(), lambda r: True)
        return super().route(req, host)

    def _mint(self, installation: str) -> Reply:
        if installation != str(self.installation_id):
            return Reply.json(404, {"message": "Not Found"})
        token = f"ghs_fake{len(self.tokens):04d}{self.installation_id}"
        expires = time.time() + self.token_seconds
        self.tokens[token] = expires
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Reply.json(
            201,
            {
                "token": token,
                "expires_at": stamp,
                "permissions": {"metadata": "read"},
                "repository_selection": self.selection,
            },
        )

    def _installation_repos(self, req: RecordedRequest, host: str) -> Reply:
        if not self._installation_token_ok(req):
            return Reply.json(401, {"message": "Bad credentials"})
        repos = self._visible()
        per_page = min(max(int(req.query.get("per_page", 30) or 30), 1), 100)
        page = max(int(req.query.get("page", 1) or 1), 1)
        last = max(1, -(-len(repos) // per_page))
        if self.cut(page):
            last = page
        items = repos[(page - 1) * per_page : page * per_page]

        def url(n: int) -> str:
            query = urlencode({"per_page": per_page, "page": n})
            return f"http://{host}{self.prefix}/installation/repositories?{query}"

        headers = {"x-ratelimit-limit": "15000", "x-ratelimit-remaining": "14999"}
        if page < last:
            headers["Link"] = _link({"next": url(page + 1), "last": url(last)})
        data = {"total_count": len(repos), "repositories": items}
        return Reply.json(200, data, headers, page=page)
