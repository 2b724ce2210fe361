"""A loopback GitHub REST API: ``per_page`` (default 30, max 100) + ``page``; ``Link``
next/prev/first/last pointing at ``/organizations/{id}/repos`` (as github.com does); optional
``/api/v3`` prefix (Enterprise); the owners' repository counts; ``GET /user``; repositories by id.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlencode

from enum_pipeline_tests.fake_http import (
    BASE_TIME,
    FakeApp,
    HostContract,
    RecordedRequest,
    Reply,
    _iso,
    _link,
    _Owner,
    page_links,
)


class GitHubApp(FakeApp):
    """The repository listing of the GitHub REST API: ``/orgs/{org}/repos``, ``/users/{user}/repos``
    (public repositories only, as on GitHub), ``/user`` and ``/user/repos`` (the token owner's
    own repositories, private ones included), and the owners' counts."""

    def __init__(
        self,
        *,
        prefix: str = "",
        web_host: str = "github.com",
        clone_credentials: str | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.prefix = prefix.rstrip("/")
        self.web_host = web_host
        self.clone_credentials = clone_credentials
        self.owners: dict[str, _Owner] = {}
        self.private_counts = True  # False: like a token of a non-member (no private counts)

    def add_owner(self, name: str, n: int, kind: str = "org") -> list[dict[str, Any]]:
        """Create an org or user with ``n`` generated repositories."""
        with self.lock:
            owner = _Owner(name, kind, self.new_id())
            self.owners[name.lower()] = owner
            for i in range(n):
                self.add_repo(name, f"Repo-{i:04d}", archived=i % 10 == 3, fork=i % 10 == 4)
            return owner.repos

    def add_repo(self, owner: str, name: str, **extra) -> dict[str, Any]:
        """Append one repository to ``owner``."""
        with self.lock:
            o = self.owners[owner.lower()]
            rid = self.new_id()
            repo = {"id": rid, "node_id": f"R_{rid}", "owner": {"login": o.name, "id": o.id}}
            repo.update(
                private=rid % 3 == 0,
                visibility="private" if rid % 3 == 0 else "public",
                default_branch="main",
                archived=False,
                fork=False,
                topics=["t1", "t2"],
                language="Python",
                license={"key": "mit", "name": "MIT License", "spdx_id": "MIT"},
                stargazers_count=rid % 5,
                forks_count=rid % 2,
                size=rid,
                description=f"repo {name}",
                created_at=_iso(BASE_TIME + timedelta(minutes=rid)),
                updated_at=_iso(BASE_TIME + timedelta(hours=rid)),
                pushed_at=_iso(BASE_TIME + timedelta(days=1, seconds=rid)),
            )
            repo.update(extra)
            o.repos.append(repo)
            self._set_name(o, repo, name)
            return repo

    def _set_name(self, owner: _Owner, repo: dict[str, Any], name: str) -> None:
        full = f"{owner.name}/{name}"
        creds = f"{self.clone_credentials}@" if self.clone_credentials else ""
        repo.update(
            name=name,
            full_name=full,
            html_url=f"https://{self.web_host}/{full}",
            clone_url=f"https://{creds}{self.web_host}/{full}.git",
            ssh_url=f"git@{self.web_host}:{full}.git",
        )

    def rename(self, owner: str, repo_id: int, new_name: str) -> None:
        """Rename a repository (same id)."""
        with self.lock:
            o = self.owners[owner.lower()]
            repo = next(r for r in o.repos if r["id"] == repo_id)
            self._set_name(o, repo, new_name)

    def delete(self, owner: str, repo_id: int) -> None:
        """Delete a repository: later pages shift by one, as on GitHub."""
        with self.lock:
            o = self.owners[owner.lower()]
            o.repos[:] = [r for r in o.repos if r["id"] != repo_id]

    def credential(self, req: RecordedRequest) -> str | None:
        value = req.headers.get("authorization") or ""
        for scheme in ("Bearer ", "token "):
            if value.startswith(scheme):
                return value[len(scheme) :]
        return None

    def _owner_json(self, owner: _Owner, req: RecordedRequest) -> dict[str, Any]:
        """``GET /orgs/{org}`` / ``/users/{user}``: private counts only for a token holder."""
        public = sum(1 for r in owner.repos if not r["private"]) + owner.unlisted_public
        data: dict[str, Any] = {
            "login": owner.name,
            "id": owner.id,
            "type": "Organization" if owner.kind == "org" else "User",
            "public_repos": public,
        }
        if self.authenticated(req) and self.private_counts:
            private = sum(1 for r in owner.repos if r["private"]) + owner.unlisted_private
            data.update(total_private_repos=private, owned_private_repos=private)
        return data

    def route(self, req: RecordedRequest, host: str) -> Reply:
        path = req.path.split("?", 1)[0]
        if not path.startswith(self.prefix + "/"):
            return Reply.json(404, {"message": "Not Found"})
        parts = [unquote(p) for p in path[len(self.prefix) :].strip("/").split("/")]
        owner: _Owner | None = None
        public_only = False
        if len(parts) == 2 and parts[0] == "repositories":
            every = [r for o in self.owners.values() for r in o.repos]
            return self.by_id(req, parts[1], every, lambda r: r["private"])
        if parts == ["user"]:
            me = self.owners.get((self.token_owner or "").lower())
            if me is None or not self.authenticated(req):
                return self.whoami(req)
            return Reply.json(200, self._owner_json(me, req))  # the own account: private counts
        if parts == ["user", "repos"] and self.authenticated(req):
            owner = self.owners.get((self.token_owner or "").lower())
        if len(parts) == 2 and parts[0] in ("orgs", "users"):
            found = self.owners.get(parts[1].lower())
            if found is not None and (parts[0] == "users" or found.kind == "org"):
                return Reply.json(200, self._owner_json(found, req))
        if len(parts) == 3 and parts[2] == "repos":
            kind, key = parts[0], parts[1]
            if kind == "orgs":
                owner = self.owners.get(key.lower())
                owner = owner if owner and owner.kind == "org" else None
            elif kind == "users":
                owner = self.owners.get(key.lower())
                public_only = True
            elif kind in ("organizations", "user"):
                owner = next((o for o in self.owners.values() if str(o.id) == key), None)
                public_only = kind == "user"
        if owner is None:
            return Reply.json(404, {"message": "Not Found", "documentation_url": "https://x"})
        per_page = min(max(int(req.query.get("per_page", 30) or 30), 1), 100)
        page = max(int(req.query.get("page", 1) or 1), 1)
        public_only = public_only or not self.authenticated(req)
        repos = [r for r in owner.repos if not r["private"]] if public_only else owner.repos
        last = max(1, -(-len(repos) // per_page))
        if self.cut(page):
            last = page
        items = repos[(page - 1) * per_page : page * per_page]
        if parts == ["user", "repos"]:
            base = f"http://{host}{self.prefix}/user/repos"
        else:
            kind = "organizations" if owner.kind == "org" else "user"
            base = f"http://{host}{self.prefix}/{kind}/{owner.id}/repos"

        def url(n: int) -> str:
            q = {k: v for k, v in req.query.items() if k != "page"}
            q["per_page"] = str(per_page)
            q["page"] = str(n)
            return f"{base}?{urlencode(q)}"

        rels = page_links(url, page, last)
        headers = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
        }
        if rels:
            headers["Link"] = _link(rels)
        return Reply.json(200, items, headers, page=page)


def _github_source(owner: str, **kw):
    from enum_pipeline.sources.github import GitHubSource

    return GitHubSource(owner, **kw)


CONTRACT = HostContract(
    name="github",
    page_size=100,
    new_app=GitHubApp,
    populate=lambda app, n: app.add_owner("Acme", n),
    new_source=_github_source,
    owner="Acme",
    owner_id=lambda app: app.owners["acme"].id,
    rename=lambda app, repo, new: app.rename("Acme", repo["id"], new),
    sent_token=lambda h: (h.get("authorization") or "").removeprefix("Bearer ") or None,
    page_2="page=2",
    delete=lambda app, item: app.delete("Acme", item["id"]),
)
