"""GitLab groups (with their subgroups) as a source of projects.

One scope per source: ``gitlab:<host>/<group path>``. The listing asks for keyset pagination
ordered by id (stable while projects are added or removed) and follows ``Link: rel="next"``;
where the server answers with offset pagination instead, it follows ``x-next-page`` and checks the
``x-total`` it reports. The scope is complete only when every page was read and the totals agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.codehost import CodeHostSource
from enum_pipeline.sources.http import (
    PageError,
    describe_page_error,
    parse_int_header,
    parse_link_header,
    parse_timestamp,
    same_origin,
    web_host,
)
from enum_pipeline.sources.remotes import normalize_remote, redact_url
from enum_pipeline.sources.repos import bool_or_none, int_or_none, text_or_none

log = logging.getLogger(__name__)


class GitLabSource(CodeHostSource):
    """Every project of one GitLab group (and, by default, its subgroups)."""

    kind = "gitlab"
    log = log

    def __init__(
        self,
        group: str,
        base_url: str = "https://gitlab.com",
        token_env: str | None = "GITLAB_TOKEN",
        include_subgroups: bool = True,
        include_archived: bool = True,
        client: httpx.Client | None = None,
        max_retries: int = 5,
        max_wait_seconds: float = 300,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        group = (group or "").strip().strip("/")
        if not group:
            raise ValueError("a GitLab group path is required")
        super().__init__(
            base_url,
            token_env,
            client=client,
            max_retries=max_retries,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
        )
        self.group = group
        self.include_subgroups = include_subgroups
        self.include_archived = include_archived
        self.host = web_host(self.base_url)
        self.scope_key = f"gitlab:{self.host}/{group.lower()}"

    def __repr__(self) -> str:
        return f"GitLabSource(group={self.group!r}, base_url={redact_url(self.base_url)!r})"

    def auth_header(self, token: str) -> tuple[str, str]:
        return "PRIVATE-TOKEN", token

    def _first_page(self) -> tuple[str, dict[str, Any]]:
        url = f"{self.base_url}/api/v4/groups/{quote(self.group, safe='')}/projects"
        params: dict[str, Any] = {
            "include_subgroups": "true" if self.include_subgroups else "false",
            # Projects shared *into* the group belong to another namespace (and scope).
            "with_shared": "false",
            "per_page": 100,
            "order_by": "id",
            "sort": "asc",
            "pagination": "keyset",
        }
        if not self.include_archived:
            params["archived"] = "false"
        return url, params

    def scan(self) -> Iterator[ScanItem]:
        """Yield the group's projects, then one verdict for the group's scope."""
        headers, _ = self._start()

        first_url, first_params = self._first_page()
        url, params = first_url, dict(first_params)
        what = f"group {self.group!r}"
        seen_ids: set[str] = set()
        visited: set[str] = set()
        totals: set[int] = set()
        yielded = malformed = pages = 0
        mode = "keyset"
        failure: str | None = None
        try:
            while True:
                try:
                    page = self._http.get_json(url, params=params, headers=headers, expect=list)
                except PageError as exc:
                    failure = describe_page_error(exc, what=what, first_page=pages == 0)
                    break
                pages += 1
                visited.add(page.url)
                if page.headers.get("x-page"):
                    mode = "offset"
                total = parse_int_header(page.headers, "x-total")
                if total is not None:
                    totals.add(total)
                for project in page.data:
                    pid = project.get("id") if isinstance(project, dict) else None
                    if pid is None or not project.get("path_with_namespace"):
                        malformed += 1
                        continue
                    if str(pid) in seen_ids:
                        continue
                    seen_ids.add(str(pid))
                    if project.get("archived") and not self.include_archived:
                        continue  # the server filters these; a server that does not, we do
                    yield self._record(project)
                    yielded += 1

                nxt = parse_link_header(page.headers.get("link"), base=page.url).get("next")
                if nxt is not None:
                    if not same_origin(nxt, self.base_url):
                        failure = (
                            f"page {self._http.safe_url(page.url)}: next link points to another "
                            f"origin ({self._http.safe_url(nxt)}); not followed with credentials"
                        )
                        break
                    url, params = nxt, None
                else:
                    next_page = (page.headers.get("x-next-page") or "").strip()
                    if not next_page:
                        break
                    if not next_page.isdigit():
                        failure = (
                            f"page {self._http.safe_url(page.url)}: unreadable x-next-page "
                            f"header {next_page[:20]!r}"
                        )
                        break
                    mode = "offset"
                    url = first_url
                    params = {k: v for k, v in first_params.items() if k != "pagination"}
                    params["page"] = int(next_page)
                full = str(httpx.URL(url, params=params) if params else httpx.URL(url))
                if full in visited:
                    failure = f"pagination loop: next page {self._http.safe_url(full)} seen before"
                    break
        finally:
            self._http.close()

        if failure is None and malformed:
            failure = f"{malformed} projects without an id or path in the listing"
        if failure is None and totals:
            if len(totals) > 1:
                failure = (
                    f"the project count changed during the listing (x-total {sorted(totals)}): "
                    "offset pages may have skipped projects"
                )
            elif len(seen_ids) != next(iter(totals)):
                failure = (
                    f"server reported x-total={next(iter(totals))} projects but "
                    f"{len(seen_ids)} were read"
                )
        if failure is None and pages > 1 and mode == "offset" and not totals:
            log.info("GitLab %s: offset pagination without x-total; no count check", what)
        yield ScopeVerdict(
            scope_key=self.scope_key,
            source_kind=self.kind,
            complete=failure is None,
            seen=yielded,
            reason=failure,
            fingerprint={
                "api_url": redact_url(self.base_url),
                "pagination": mode,
                "pages": pages,
                "listed": len(seen_ids),
            },
        )

    def _record(self, project: dict[str, Any]) -> ProjectRecord:
        http_url = project.get("http_url_to_repo") or None
        web_url = project.get("web_url") or None
        namespace = project.get("namespace") if isinstance(project.get("namespace"), dict) else {}
        forked = project.get("forked_from_project")
        forked = forked if isinstance(forked, dict) else {}
        topics = project.get("topics")
        if not isinstance(topics, list):
            topics = project.get("tag_list") if isinstance(project.get("tag_list"), list) else []
        attributes = {
            "id": project.get("id"),
            "path": project.get("path"),
            "path_with_namespace": project.get("path_with_namespace"),
            "name_with_namespace": project.get("name_with_namespace"),
            "web_url": redact_url(web_url) if web_url else None,
            "ssh_url": (
                redact_url(project["ssh_url_to_repo"]) if project.get("ssh_url_to_repo") else None
            ),
            "forks_count": project.get("forks_count"),
            "empty_repo": project.get("empty_repo"),
            "forked_from_id": forked.get("id"),
            "forked_from_path": forked.get("path_with_namespace"),
            "namespace_full_path": namespace.get("full_path"),
            "namespace_kind": namespace.get("kind"),
        }
        return ProjectRecord(
            project_key=f"gitlab:{self.host}:{project['id']}",
            scope_key=self.scope_key,
            source_kind=self.kind,
            name=str(project.get("name") or project.get("path") or project["id"]),
            location=str(project["path_with_namespace"]),
            vcs="git",
            remote_url=redact_url(http_url) if http_url else None,
            normalized_remote=normalize_remote(web_url or http_url or ""),
            default_branch=project.get("default_branch") or None,
            attributes=attributes,
            archived=bool_or_none(project.get("archived")),
            # the list names the source of a fork; a project without it is not one
            fork=bool(forked),
            visibility=text_or_none(project.get("visibility")),
            description=text_or_none(project.get("description")),
            topics=tuple(str(t) for t in topics if isinstance(t, str | int)),
            stars=int_or_none(project.get("star_count")),
            created_at=parse_timestamp(project.get("created_at")),
            last_activity_at=parse_timestamp(project.get("last_activity_at")),
        )
