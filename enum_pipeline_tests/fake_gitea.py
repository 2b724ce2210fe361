"""A loopback Gitea / Forgejo API: ``limit`` clamped server-side to ``max_items`` + ``page``;
``X-Total-Count`` and a ``Link`` built from ``root_url``; ``GET /api/v1/user``; repositories by
id.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlencode

from enum_pipeline_tests.fake_http import (
    FakeApp,
    HostContract,
    RecordedRequest,
    Reply,
    _link,
    _Owner,
    page_links,
)


class GiteaApp(FakeApp):
    """``GET /api/v1/{orgs,users}/:owner/repos`` with ``limit`` clamped to ``max_items``."""

    def __init__(
        self,
        *,
        max_items: int = 50,
        default_items: int = 30,
        root_url: str | None = None,
        send_link: bool = True,
        send_total: bool = True,
        web_host: str = "gitea.example.com",
        clone_credentials: str | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.max_items = max_items
        self.default_items = default_items
        self.root_url = root_url
        self.send_link = send_link
        self.send_total = send_total
        self.web_host = web_host
        self.clone_credentials = clone_credentials
        self.owners: dict[str, _Owner] = {}

    def add_owner(
        self, name: str, n: int, kind: str = "org", private_every: int = 0
    ) -> list[dict[str, Any]]:
        """Create an org or user with ``n`` generated repositories (every ``private_every``-th
        one private)."""
        with self.lock:
            self.owners[name.lower()] = _Owner(name, kind, self.new_id())
            for i in range(n):
                private = bool(private_every) and i % private_every == private_every - 1
                self.add_repo(name, f"repo-{i:04d}", private=private)
            return self.owners[name.lower()].repos

    def add_repo(self, owner: str, name: str, **extra) -> dict[str, Any]:
        """Append one repository to ``owner``."""
        with self.lock:
            o = self.owners[owner.lower()]
            rid = self.new_id()
            repo = {
                "id": rid,
                "owner": {"login": o.name},
                "private": False,
                "internal": False,
                "fork": False,
                "mirror": False,
                "empty": False,
                "archived": False,
                "default_branch": "main",
                "stars_count": 1,
                "topics": ["go"],
                "licenses": ["MIT"],
                "size": 10,
                "language": "Go",
                "created_at": "2024-01-01T00:00:00+01:00",
                "updated_at": "2024-01-02T00:00:00+01:00",
                "description": "",
            }
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

    def delete(self, owner: str, repo_id: int) -> None:
        """Delete a repository."""
        with self.lock:
            o = self.owners[owner.lower()]
            o.repos[:] = [r for r in o.repos if r["id"] != repo_id]

    def rename(self, owner: str, repo_id: int, new_name: str) -> None:
        """Rename a repository (same id)."""
        with self.lock:
            o = self.owners[owner.lower()]
            self._set_name(o, next(r for r in o.repos if r["id"] == repo_id), new_name)

    def credential(self, req: RecordedRequest) -> str | None:
        value = req.headers.get("authorization") or ""
        return value[len("token ") :] if value.startswith("token ") else None

    def route(self, req: RecordedRequest, host: str) -> Reply:
        path = req.path.split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["api", "v1", "user"]:
            return self.whoami(req)
        if len(parts) == 4 and parts[:3] == ["api", "v1", "repositories"]:
            every = [r for o in self.owners.values() for r in o.repos]
            return self.by_id(req, parts[3], every, lambda r: r["private"])
        if (
            len(parts) not in (4, 5)
            or parts[:2] != ["api", "v1"]
            or parts[2] not in ("orgs", "users")
        ):
            return Reply.json(404, {"message": "not found"})
        if len(parts) == 5 and parts[4] != "repos":
            return Reply.json(404, {"message": "not found"})
        owner = self.owners.get(parts[3].lower())
        if owner is None or (parts[2] == "orgs" and owner.kind != "org"):
            return Reply.json(404, {"errors": None, "message": "GetOrgByName", "url": ""})
        if len(parts) == 4:
            name_field = "username" if owner.kind == "org" else "login"
            return Reply.json(200, {"id": owner.id, name_field: owner.name})
        try:
            limit = int(req.query.get("limit", 0) or 0)
        except ValueError:
            limit = 0
        if limit <= 0:
            limit = self.default_items
        limit = min(limit, self.max_items)  # the silent clamp (MAX_RESPONSE_ITEMS)
        page = max(int(req.query.get("page", 1) or 1), 1)
        repos = owner.repos
        if not self.authenticated(req):
            repos = [r for r in repos if not r["private"]]
        items = repos[(page - 1) * limit : page * limit]
        if self.cut_after_page is not None and page > self.cut_after_page:
            items = []
        headers: dict[str, str] = {}
        if self.send_total:
            headers["X-Total-Count"] = str(len(repos))
        if self.send_link:
            root = (self.root_url or f"http://{host}").rstrip("/")
            last = max(1, -(-len(repos) // limit))
            if self.cut(page):
                last = page

            def url(n: int) -> str:
                nq = dict(req.query)
                nq["page"] = str(n)
                return f"{root}{path}?{urlencode(nq)}"

            rels = page_links(url, page, last)
            if rels:
                headers["Link"] = _link(rels)
        return Reply.json(200, items, headers, page=page)


def _gitea_source(owner: str, **kw):
    from enum_pipeline.sources.gitea import GiteaSource

    return GiteaSource(owner, **kw)


CONTRACT = HostContract(
    name="gitea",
    page_size=50,
    new_app=GiteaApp,
    populate=lambda app, n: app.add_owner("Org", n, private_every=3),
    new_source=_gitea_source,
    owner="Org",
    owner_id=lambda app: app.owners["org"].id,
    rename=lambda app, repo, new: app.rename("Org", repo["id"], new),
    sent_token=lambda h: (h.get("authorization") or "").removeprefix("token ") or None,
    page_2="page=2",
    delete=lambda app, item: app.delete("Org", item["id"]),
)
