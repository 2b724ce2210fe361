"""A loopback GitLab API: keyset (``pagination=keyset&order_by=id&sort=asc``, ``Link``
rel=next with ``id_after``) or offset (``page``, ``x-next-page``, ``x-total``, ``x-total-pages``,
optional ``Link``); ``id_after`` / ``id_before`` filters; no ``x-total`` past 10,000 projects
(``count_limit``), as GitLab; subgroups; the ``archived`` filter; projects by id.
"""

from __future__ import annotations

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
)


class GitLabApp(FakeApp):
    """``GET /api/v4/groups/:id/projects`` with keyset and offset pagination."""

    def __init__(
        self,
        *,
        web_host: str = "gitlab.example.com",
        keyset: bool = True,
        offset_links: bool = True,
        send_total: bool = True,
        clone_credentials: str | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.web_host = web_host
        self.keyset = keyset
        self.offset_links = offset_links
        self.send_total = send_total  # False: never any x-total
        self.count_limit = 10_000  # like GitLab: no x-total past this many
        self.clone_credentials = clone_credentials
        self.groups: dict[str, _Owner] = {}
        self.projects: list[dict[str, Any]] = []

    def add_group(self, full_path: str, n: int) -> list[dict[str, Any]]:
        """Create a group (``a`` or ``a/b`` for a subgroup) holding ``n`` projects."""
        with self.lock:
            group = _Owner(full_path, "group", self.new_id())
            self.groups[full_path.lower()] = group
            return [self.add_project(full_path, f"proj-{i:04d}") for i in range(n)]

    def add_project(self, group: str, path: str, **extra) -> dict[str, Any]:
        """Add one project to a group."""
        with self.lock:
            g = self.groups[group.lower()]
            pid = self.new_id()
            project = {
                "id": pid,
                "name": path.replace("-", " ").title(),
                "path": path,
                "namespace": {"id": g.id, "full_path": g.name, "kind": "group", "path": g.name},
                "default_branch": "main",
                "archived": False,
                "visibility": "internal",
                "topics": ["x"],
                "star_count": pid % 7,
                "forks_count": 0,
                "created_at": _iso(BASE_TIME + timedelta(minutes=pid)),
                "last_activity_at": "2024-02-03T04:05:06.789Z",
                "description": None,
                "empty_repo": False,
            }
            project.update(extra)
            pwn = f"{g.name}/{path}"
            creds = f"{self.clone_credentials}@" if self.clone_credentials else ""
            project.update(
                path_with_namespace=pwn,
                name_with_namespace=f"{g.name} / {project['name']}",
                web_url=f"https://{self.web_host}/{pwn}",
                http_url_to_repo=f"https://{creds}{self.web_host}/{pwn}.git",
                ssh_url_to_repo=f"git@{self.web_host}:{pwn}.git",
            )
            g.repos.append(project)
            self.projects.append(project)
            return project

    def delete_project(self, project_id: int) -> None:
        """Delete one project."""
        with self.lock:
            self.projects[:] = [p for p in self.projects if p["id"] != project_id]
            for g in self.groups.values():
                g.repos[:] = [p for p in g.repos if p["id"] != project_id]

    def credential(self, req: RecordedRequest) -> str | None:
        return req.headers.get("private-token")

    def route(self, req: RecordedRequest, host: str) -> Reply:
        path = req.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if parts == ["api", "v4", "user"]:
            return self.whoami(req, "username")
        if len(parts) == 4 and parts[:3] == ["api", "v4", "projects"]:
            return self.by_id(req, parts[3], self.projects, lambda p: p["visibility"] != "public")
        if len(parts) not in (4, 5) or parts[:3] != ["api", "v4", "groups"]:
            return Reply.json(404, {"error": "404 Not Found"})
        if len(parts) == 5 and parts[4] != "projects":
            return Reply.json(404, {"error": "404 Not Found"})
        key = unquote(parts[3])
        group = self.groups.get(key.lower()) or next(
            (g for g in self.groups.values() if str(g.id) == key), None
        )
        if group is None:
            return Reply.json(404, {"message": "404 Group Not Found"})
        if len(parts) == 4:
            return Reply.json(200, {"id": group.id, "full_path": group.name, "name": group.name})
        q = req.query
        subgroups = q.get("include_subgroups", "false") == "true"
        projects = [
            p
            for p in self.projects
            if p["namespace"]["full_path"].lower() == group.name.lower()
            or (
                subgroups
                and p["namespace"]["full_path"].lower().startswith(group.name.lower() + "/")
            )
        ]
        if not self.authenticated(req):
            projects = [p for p in projects if p["visibility"] == "public"]
        if q.get("archived") == "false":
            projects = [p for p in projects if not p["archived"]]
        elif q.get("archived") == "true":
            projects = [p for p in projects if p["archived"]]
        projects.sort(key=lambda p: p["id"])
        if q.get("id_before"):
            projects = [p for p in projects if p["id"] < int(q["id_before"])]
        if q.get("id_after") and q.get("pagination") != "keyset":
            projects = [p for p in projects if p["id"] > int(q["id_after"])]
        per_page = min(max(int(q.get("per_page", 20) or 20), 1), 100)
        base = f"http://{host}/api/v4/groups/{group.id}/projects"
        use_keyset = (
            self.keyset
            and q.get("pagination") == "keyset"
            and q.get("order_by") == "id"
            and q.get("sort", "asc") == "asc"
        )
        if use_keyset:
            after = int(q.get("id_after", 0) or 0)
            before = sum(1 for p in projects if p["id"] <= after)
            rest = [p for p in projects if p["id"] > after]
            items = rest[:per_page]
            headers: dict[str, str] = {}
            if len(rest) > per_page and not self.cut(before // per_page + 1):
                nq = dict(q)
                nq["id_after"] = str(items[-1]["id"])
                headers["Link"] = _link({"next": f"{base}?{urlencode(nq)}"})
            return Reply.json(200, items, headers, page=before // per_page + 1)
        page = max(int(q.get("page", 1) or 1), 1)
        total = len(projects)
        items = projects[(page - 1) * per_page : page * per_page]
        pages = max(1, -(-total // per_page))
        headers = {"x-page": str(page), "x-per-page": str(per_page)}
        if self.send_total and total <= self.count_limit:
            headers.update({"x-total": str(total), "x-total-pages": str(pages)})
        if self.cut(page):
            pages = page
        headers["x-next-page"] = str(page + 1) if page < pages else ""
        headers["x-prev-page"] = str(page - 1) if page > 1 else ""
        if self.offset_links:

            def url(n: int) -> str:
                nq = {k: v for k, v in q.items() if k != "page"}
                nq["page"] = str(n)
                return f"{base}?{urlencode(nq)}"

            rels = {"first": url(1), "last": url(pages)}
            if page < pages:
                rels["next"] = url(page + 1)
            headers["Link"] = _link(rels)
        return Reply.json(200, items, headers, page=page)


def _populate(app: GitLabApp, n: int) -> list[dict[str, Any]]:
    projects = app.add_group("grp", n)
    for i, project in enumerate(projects):
        project["visibility"] = ("public", "internal", "private")[i % 3]
    return projects


def _rename(app: GitLabApp, project: dict[str, Any], new: str) -> None:
    project.update(path=new, name=new, path_with_namespace=f"grp/{new}")


def _gitlab_source(group: str, **kw):
    from enum_pipeline.sources.gitlab import GitLabSource

    return GitLabSource(group, **kw)


CONTRACT = HostContract(
    name="gitlab",
    page_size=100,
    new_app=GitLabApp,
    populate=_populate,
    new_source=_gitlab_source,
    owner="grp",
    owner_id=lambda app: app.groups["grp"].id,
    rename=_rename,
    sent_token=lambda h: h.get("private-token"),
    page_2="id_after=",
    delete=lambda app, item: app.delete_project(item["id"]),
)
