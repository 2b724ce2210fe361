"""A loopback Bitbucket Cloud API (``/2.0``): ``GET /repositories/{workspace}`` paged by
``page`` + ``pagelen`` (max 100), each page an object with ``size`` (the listing's total),
``page``, ``pagelen``, ``values`` and, but on the last page, ``next``; ``q=project.key="K"``;
public repositories only for an anonymous request; ``GET /workspaces/{workspace}`` (its
``uuid``); ``GET /user``; one repository by ``uuid`` or slug. Repositories are keyed by
``uuid`` (``{…}``) as Bitbucket's are.
"""

from __future__ import annotations

import uuid
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
)


def _uuid(n: int) -> str:
    return "{" + str(uuid.UUID(int=n)) + "}"


class BitbucketApp(FakeApp):
    """Workspaces of generated repositories, served the way Bitbucket Cloud pages them."""

    def __init__(
        self, *, web_host: str = "bitbucket.org", clone_credentials: str | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.web_host = web_host
        self.clone_credentials = clone_credentials
        self.workspaces: dict[str, dict[str, Any]] = {}  # slug -> {"uuid", "repos"}

    def add_workspace(self, slug: str, n: int, *, private_every: int = 3) -> list[dict[str, Any]]:
        """A workspace with ``n`` repositories (every ``private_every``-th one private)."""
        with self.lock:
            self.workspaces[slug.lower()] = {
                "slug": slug,
                "uuid": _uuid(self.new_id()),
                "repos": [],
            }
            return [
                self.add_repo(slug, f"repo-{i:04d}", is_private=i % private_every == 0)
                for i in range(n)
            ]

    def add_repo(self, workspace: str, slug: str, **extra: Any) -> dict[str, Any]:
        """Append one repository to ``workspace``."""
        with self.lock:
            ws = self.workspaces[workspace.lower()]
            n = self.new_id()
            repo: dict[str, Any] = {
                "type": "repository",
                "uuid": _uuid(n),
                "is_private": False,
                "description": f"repo {slug}",
                "language": "python",
                "created_on": _iso(BASE_TIME + timedelta(minutes=n)),
                "updated_on": _iso(BASE_TIME + timedelta(hours=n)),
                "size": n * 10,
                "mainbranch": {"name": "main", "type": "branch"},
                "project": {"key": "PRJ" if n % 2 else "OPS", "type": "project"},
                "parent": None,
                "workspace": {"slug": ws["slug"], "uuid": ws["uuid"]},
            }
            repo.update(extra)
            self._set_slug(ws, repo, slug)
            ws["repos"].append(repo)
            return repo

    def _set_slug(self, ws: dict[str, Any], repo: dict[str, Any], slug: str) -> None:
        full = f"{ws['slug']}/{slug}"
        creds = f"{self.clone_credentials}@" if self.clone_credentials else ""
        repo.update(
            slug=slug,
            name=slug.replace("-", " ").title(),
            full_name=full,
            links={
                "html": {"href": f"https://{self.web_host}/{full}"},
                "clone": [
                    {"name": "https", "href": f"https://{creds}{self.web_host}/{full}.git"},
                    {"name": "ssh", "href": f"git@{self.web_host}:{full}.git"},
                ],
            },
        )

    def rename(self, repo: dict[str, Any], slug: str) -> None:
        """Rename a repository (same uuid)."""
        with self.lock:
            self._set_slug(self.workspaces[repo["workspace"]["slug"].lower()], repo, slug)

    def delete(self, repo: dict[str, Any]) -> None:
        """Delete a repository: later pages shift by one."""
        with self.lock:
            ws = self.workspaces[repo["workspace"]["slug"].lower()]
            ws["repos"][:] = [r for r in ws["repos"] if r["uuid"] != repo["uuid"]]

    def credential(self, req: RecordedRequest) -> str | None:
        value = req.headers.get("authorization") or ""
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def route(self, req: RecordedRequest, host: str) -> Reply:
        parts = [unquote(p) for p in req.path.split("?", 1)[0].strip("/").split("/")]
        if parts[:1] != ["2.0"]:
            return Reply.json(404, {"type": "error", "error": {"message": "Not found"}})
        parts = parts[1:]
        if parts == ["user"]:
            return self.whoami(req, "username")
        ws = self.workspaces.get(parts[1].lower()) if len(parts) >= 2 else None
        if ws is None:
            return Reply.json(404, {"type": "error", "error": {"message": "No workspace"}})
        if parts[0] == "workspaces" and len(parts) == 2:
            return Reply.json(200, {"type": "workspace", "uuid": ws["uuid"], "slug": ws["slug"]})
        if parts[0] != "repositories":
            return Reply.json(404, {"type": "error", "error": {"message": "Not found"}})
        visible = [r for r in ws["repos"] if self.authenticated(req) or not r["is_private"]]
        if len(parts) == 3:
            found = next((r for r in visible if parts[2] in (r["uuid"], r["slug"])), None)
            if found is None:
                return Reply.json(404, {"type": "error", "error": {"message": "Not found"}})
            return Reply.json(200, dict(found))
        return self._page(req, host, ws, visible)

    def _page(self, req: RecordedRequest, host: str, ws, repos: list[dict[str, Any]]) -> Reply:
        q = req.query
        project = q.get("q", "")
        if project.startswith('project.key="'):
            key = project[len('project.key="') : -1]
            repos = [r for r in repos if r["project"]["key"] == key]
        pagelen = min(max(int(q.get("pagelen", 10) or 10), 1), 100)
        page = max(int(q.get("page", 1) or 1), 1)
        last = max(1, -(-len(repos) // pagelen))
        if self.cut(page):
            last = page
        data: dict[str, Any] = {
            "size": len(repos),
            "page": page,
            "pagelen": pagelen,
            "values": repos[(page - 1) * pagelen : page * pagelen],
        }
        if page < last:
            nq = {**q, "page": str(page + 1), "pagelen": str(pagelen)}
            data["next"] = f"http://{host}/2.0/repositories/{ws['slug']}?{urlencode(nq)}"
        return Reply.json(200, data, page=page)


def _source(workspace: str, **kw: Any):
    from enum_pipeline.sources.bitbucket import BitbucketSource

    return BitbucketSource(workspace, **{"base_url": kw.pop("base_url") + "/2.0", **kw})


CONTRACT = HostContract(
    name="bitbucket",
    page_size=100,
    new_app=BitbucketApp,
    populate=lambda app, n: app.add_workspace("team", n),
    new_source=_source,
    owner="team",
    owner_id=lambda app: app.workspaces["team"]["uuid"],
    rename=lambda app, repo, new: app.rename(repo, new),
    sent_token=lambda h: (h.get("authorization") or "").removeprefix("Bearer ") or None,
    page_2="page=2",
    delete=lambda app, repo: app.delete(repo),
    item_id=lambda repo: repo["uuid"],
    key_id=lambda repo: repo["uuid"].strip("{}"),
    is_private=lambda repo: bool(repo["is_private"]),
    items_of=lambda data: data["values"],
    with_items=lambda data, items: {**data, "values": items},
)
