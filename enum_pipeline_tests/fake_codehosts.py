"""Loopback fakes of the GitHub, GitLab and Gitea list APIs, with failure injection.

A :class:`FakeCodeHost` runs a threaded ``http.server`` on ``127.0.0.1:0`` in a background thread
and hands every request to one *app* (:class:`GitHubApp`, :class:`GitLabApp`, :class:`GiteaApp`).
Each app serves generated repositories with the real pagination semantics of its API:

- GitHub: ``per_page`` (default 30, max 100) + ``page``; ``Link`` next/prev/first/last pointing
  at ``/organizations/{id}/repos`` (as github.com does); optional ``/api/v3`` prefix (Enterprise).
- GitLab: keyset (``pagination=keyset&order_by=id&sort=asc``, ``Link`` rel=next with
  ``id_after``) or offset (``page``, ``x-next-page``, ``x-total``, ``x-total-pages``, optional
  ``Link``); subgroups; ``archived`` filter.
- Gitea: ``limit`` clamped server-side to ``max_items`` + ``page``; ``X-Total-Count`` and a
  ``Link`` built from ``root_url``.

Failure injection is per *page* (1-based index in the listing): :meth:`FakeApp.fail_page`,
:meth:`FakeApp.rate_limit_page`, :meth:`FakeApp.truncate_page`, :meth:`FakeApp.slow_page`,
:meth:`FakeApp.trickle_page` (one byte at a time, forever: the status line or the body).
``token=...`` makes the app refuse (401) requests with another credential (requests without
one are anonymous); without it, any credential is accepted. As on the real hosts, private (and
internal) repositories are listed and counted only for an authenticated request, each app
answers whom a token belongs to (``token_owner``: GitHub ``GET /user``, GitLab
``GET /api/v4/user``, Gitea ``GET /api/v1/user``) and the owner lookups (with the owner's stable
id), and counts go out as the real APIs send them (GitHub owner counts, GitLab ``x-total``, Gitea
``X-Total-Count``). :meth:`FakeApp.cut_after` ends the listing early while the counts still tell
the truth. Every request is recorded in :attr:`FakeApp.requests` (path, query, headers, page,
status answered).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reply:
    """One answer of an app: status, headers, body bytes, and the listing page it belongs to."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    page: int | None = None
    delay: float = 0.0
    trickle: float = 0.0  # > 0: send one byte every ``trickle`` seconds, never finishing
    trickle_headers: bool = False  # trickle from the status line on (else from the body)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None, page=None):
        """A JSON answer."""
        return cls(status, dict(headers or {}), json.dumps(data).encode(), page)


@dataclass
class Fault:
    """An injected failure for listing page ``page`` (None: any page), ``times`` times."""

    page: int | None
    times: int | None = 1  # None: forever
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    truncate: bool = False
    delay: float = 0.0
    trickle: float = 0.0
    trickle_headers: bool = False
    then: Callable[[], None] | None = None  # run after the page is built (change the data)
    hits: int = 0

    def active(self) -> bool:
        return self.times is None or self.hits < self.times


@dataclass
class RecordedRequest:
    """A request the fake received, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    page: int | None = None
    status: int | None = None
    body: bytes = b""


class FakeApp:
    """Base of the fake APIs: routing is the subclass's, faults and recording are here."""

    def __init__(
        self,
        *,
        token: str | None = None,
        token_owner: str | None = "token-bot",
    ) -> None:
        self.token = token
        self.token_owner = token_owner  # None: the token cannot say whom it belongs to
        self.token_owner_id = 4242
        self.cut_after_page: int | None = None
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self._next_id = 1000

    # -- failure injection ---------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Register a fault; the first active fault matching a page wins."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def fail_page(self, page: int | None, status: int = 502, times: int | None = 1, **kw) -> Fault:
        """Answer ``status`` (default 502) on ``page``, ``times`` times (None: forever)."""
        body = kw.pop("body", json.dumps({"message": f"injected {status}"}).encode())
        return self.add_fault(Fault(page, times, status=status, body=body, **kw))

    def rate_limit_page(
        self,
        page: int | None,
        *,
        status: int = 429,
        retry_after: float | None = None,
        reset_in: float | None = None,
        reset_header: str = "x-ratelimit-reset",
        message: str = "API rate limit exceeded",
        times: int | None = 1,
    ) -> Fault:
        """A rate-limit answer: ``Retry-After`` and/or ``remaining: 0`` + reset epoch."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        if reset_in is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-limit"] = "5000"
            headers[reset_header] = str(int(time.time() + reset_in))
        body = json.dumps({"message": message}).encode()
        return self.add_fault(Fault(page, times, status=status, headers=headers, body=body))

    def truncate_page(self, page: int | None, times: int | None = 1) -> Fault:
        """Serve ``page`` with its JSON body cut in half (a valid HTTP answer, invalid JSON)."""
        return self.add_fault(Fault(page, times, truncate=True))

    def slow_page(self, page: int | None, delay: float, times: int | None = 1) -> Fault:
        """Wait ``delay`` seconds before answering ``page``."""
        return self.add_fault(Fault(page, times, delay=delay))

    def trickle_page(
        self, page: int | None, interval: float = 0.2, *, headers: bool = False, times=None
    ) -> Fault:
        """Answer ``page`` one byte every ``interval`` seconds and never finish: the body after
        complete headers (a huge ``Content-Length``), or from the status line on (``headers``)."""
        return self.add_fault(Fault(page, times, trickle=interval, trickle_headers=headers))

    def cut_after(self, page: int) -> None:
        """End the listing after ``page`` (no next page; later pages empty), counts unchanged."""
        self.cut_after_page = page

    def cut(self, page: int) -> bool:
        """Whether ``page`` is the last one served by a listing cut short."""
        return self.cut_after_page is not None and page >= self.cut_after_page

    def after_page(self, page: int, action: Callable[[], None]) -> Fault:
        """Run ``action`` once, right after ``page`` was built (e.g. delete a repository)."""
        return self.add_fault(Fault(page, 1, then=action))

    # -- introspection -------------------------------------------------------------------------

    def statuses(self) -> list[int | None]:
        """The statuses answered, in order."""
        with self.lock:
            return [r.status for r in self.requests]

    def listing_requests(self) -> list[RecordedRequest]:
        """The requests for listing pages (not owner lookups or 404s)."""
        with self.lock:
            return [r for r in self.requests if r.page is not None]

    # -- request handling ----------------------------------------------------------------------

    def route(self, req: RecordedRequest, host: str) -> Reply:  # pragma: no cover - abstract
        """Answer a request (``host`` is the Host header, for absolute links)."""
        raise NotImplementedError

    def credential(self, req: RecordedRequest) -> str | None:  # pragma: no cover - abstract
        """The token a request carries, if any."""
        return None

    def authorized(self, req: RecordedRequest) -> bool:
        """Whether the request carries the app's token."""
        return self.credential(req) == self.token

    def authenticated(self, req: RecordedRequest) -> bool:
        """Whether the request is authenticated (any credential when the app has no token)."""
        sent = self.credential(req)
        return sent is not None and (self.token is None or sent == self.token)

    def whoami(self, req: RecordedRequest, login_field: str = "login") -> Reply:
        """``GET /user``: the token's owner; 401 without a credential; 403 for a token that
        cannot say whom it belongs to (``token_owner=None``, like a GitHub App's)."""
        if not self.authenticated(req):
            return Reply.json(401, {"message": "401 Unauthorized"})
        if self.token_owner is None:
            return Reply.json(403, {"message": "Resource not accessible by integration"})
        return Reply.json(200, {login_field: self.token_owner, "id": self.token_owner_id})

    def handle(self, req: RecordedRequest, host: str) -> Reply:
        """Answer one request: route it, then apply faults, and record it."""
        with self.lock:
            self.requests.append(req)
            if (
                self.token is not None
                and self.credential(req) is not None
                and not self.authorized(req)
            ):
                reply = Reply.json(401, {"message": "Bad credentials"})
            else:
                reply = self.route(req, host)
            req.page = reply.page
            for fault in self.faults:
                if reply.page is None or not fault.active():
                    continue  # faults hit listing pages only (not 404s or 401s)
                if fault.page is None or fault.page == reply.page:
                    fault.hits += 1
                    reply = self._apply(fault, reply)
                    if fault.then is not None:
                        fault.then()
                    break
            req.status = reply.status
            return reply

    @staticmethod
    def _apply(fault: Fault, reply: Reply) -> Reply:
        if fault.status is not None:
            return Reply(fault.status, dict(fault.headers), fault.body or b"", reply.page)
        if fault.truncate:
            return Reply(
                reply.status, reply.headers, reply.body[: len(reply.body) // 2], reply.page
            )
        if fault.trickle:
            return Reply(
                reply.status,
                reply.headers,
                reply.body,
                reply.page,
                trickle=fault.trickle,
                trickle_headers=fault.trickle_headers,
            )
        if fault.delay:
            return Reply(reply.status, reply.headers, reply.body, reply.page, fault.delay)
        return reply

    def by_id(self, req: RecordedRequest, rid: str, repos: Iterable[dict], hidden) -> Reply:
        """``GET`` one repository by its id, as every host offers it: 404 when it does not
        exist or the requester cannot see it (``hidden(repo)``: private, or internal to an
        anonymous caller)."""
        with self.lock:
            repo = next((r for r in repos if str(r["id"]) == rid), None)
            if repo is None or (hidden(repo) and not self.authenticated(req)):
                return Reply.json(404, {"message": "Not Found"})
            return Reply.json(200, dict(repo))

    def new_id(self) -> int:
        """A fresh numeric id (repositories, owners, groups)."""
        with self.lock:
            self._next_id += 1
            return self._next_id


def _link(rels: dict[str, str]) -> str:
    return ", ".join(f'<{url}>; rel="{rel}"' for rel, url in rels.items())


# -- GitHub ------------------------------------------------------------------------------------


@dataclass
class _Owner:
    name: str
    kind: str  # "org" | "user" | "group"
    id: int
    repos: list[dict[str, Any]] = field(default_factory=list)
    unlisted_public: int = 0  # public repositories counted but missing from the listing
    unlisted_private: int = 0


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

        rels: dict[str, str] = {}
        if page > 1:
            rels["prev"] = url(page - 1)
            rels["first"] = url(1)
        if page < last:
            rels["next"] = url(page + 1)
            rels["last"] = url(last)
        headers = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
        }
        if rels:
            headers["Link"] = _link(rels)
        return Reply.json(200, items, headers, page=page)


# -- GitLab ------------------------------------------------------------------------------------


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
        self.send_total = send_total  # False: like gitlab.com past 10,000 projects
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
        if self.send_total:
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


# -- Gitea -------------------------------------------------------------------------------------


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

            rels: dict[str, str] = {}
            if page < last:
                rels["next"] = url(page + 1)
                rels["last"] = url(last)
            if page > 1:
                rels["first"] = url(1)
                rels["prev"] = url(page - 1)
            if rels:
                headers["Link"] = _link(rels)
        return Reply.json(200, items, headers, page=page)


# -- the server --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # a client that timed out and closed the socket is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK cost ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        app: FakeApp = self.server.app  # type: ignore[attr-defined]
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        req = RecordedRequest(method, self.path, query, headers, body=body)
        host = headers.get("host") or "{}:{}".format(*self.server.server_address[:2])
        try:
            reply = app.handle(req, host)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 and tell
            reply = Reply.json(500, {"message": f"fake crashed: {exc!r}"})
            req.status = 500
        if reply.delay:
            time.sleep(reply.delay)
        if reply.trickle:
            self._trickle(reply)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self, reply: Reply) -> None:
        """Send one byte every ``reply.trickle`` seconds until the client goes (at most 10 min)."""
        if reply.trickle_headers:
            data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            self.wfile.write(head + b"Content-Length: 1000000000\r\n\r\n[")
            self.wfile.flush()
            data = b" " * 100_000
        end = time.monotonic() + 600
        try:
            for byte in data:
                if time.monotonic() > end:
                    break
                self.wfile.write(bytes((byte,)))
                self.wfile.flush()
                time.sleep(reply.trickle)
        except OSError:
            pass  # the client gave up: what this fault is for
        self.close_connection = True


class FakeCodeHost:
    """Runs ``app`` on ``127.0.0.1:<free port>`` in a background thread (a context manager)."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._url is not None, "server not started"
        return self._url

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>`` (what sources use as the host in their keys)."""
        return self.url.split("://", 1)[1]

    def start(self) -> FakeCodeHost:
        """Bind and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.app = self.app  # type: ignore[attr-defined]
        host, port = self._server.server_address[:2]
        self._url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeCodeHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quote_group(path: str) -> str:
    """URL-encode a GitLab group path the way the API wants it (``a/b`` → ``a%2Fb``)."""
    return quote(path, safe="")


class FakeSleep:
    """Records the waits instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def scan(source) -> tuple[list, list]:
    """All records and the verdicts of one scan; exactly one verdict, and it comes last."""
    from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict

    items = list(source.scan())
    records = [i for i in items if isinstance(i, ProjectRecord)]
    verdicts = [i for i in items if isinstance(i, ScopeVerdict)]
    assert len(verdicts) == 1 and items[-1] is verdicts[0]
    return records, verdicts
