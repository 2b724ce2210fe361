"""GitLab groups (with their subgroups) as a source of projects.

One scope per source: ``gitlab:<host>/<group path>``. The listing asks for keyset pagination
ordered by id (stable while projects are added or removed) and follows ``Link: rel="next"``;
where the server answers with offset pagination instead, it follows ``x-next-page``. The listing is
checked against the ``x-total`` of its offset pages or, for a keyset listing (which carries none),
of one ``per_page=1`` request; without a total the scope is incomplete. The scope is complete
only when every page was read and the totals agree.

Identity: the group's numeric id and the username the token belongs to (``GET /api/v4/user``),
or ``anonymous``. Coverage: public projects only without a token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Unpack
from urllib.parse import quote

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.codehost import CodeHostSource
from enum_pipeline.sources.fields import FILLED_COLUMNS
from enum_pipeline.sources.filters import path_below
from enum_pipeline.sources.http import Page, parse_int_header
from enum_pipeline.sources.listing import (
    HttpOptions,
    Listing,
    ListingError,
    PageRequest,
    count_check,
)
from enum_pipeline.sources.remotes import redact_url
from enum_pipeline.sources.repos import host_record, int_or_none, parse_timestamp, text_or_none

log = logging.getLogger(__name__)


class GitLabSource(CodeHostSource):
    """Every project of one GitLab group (and, by default, its subgroups)."""

    kind = "gitlab"
    filled_columns = FILLED_COLUMNS["gitlab"]
    repo_by_id_path = "/api/v4/projects/{id}"
    log = log
    noun = "projects"
    user_path = "/api/v4/user"
    user_field = "username"

    def __init__(
        self,
        group: str,
        base_url: str = "https://gitlab.com",
        token_env: str | None = "GITLAB_TOKEN",
        include_subgroups: bool = True,
        include_archived: bool = True,
        exclude_subgroups: Sequence[str] | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        group = (group or "").strip().strip("/")
        if not group:
            raise ValueError("a GitLab group path is required")
        super().__init__(group, "group", base_url, token_env, **http)
        self.include_subgroups = include_subgroups
        self.include_archived = include_archived
        self.listing_filter = self.listing_filter.with_subgroups(exclude_subgroups)

    def _item_path(self, item: dict[str, Any]) -> str | None:
        return path_below(self.owner, item.get("path_with_namespace"))

    def __repr__(self) -> str:
        return f"GitLabSource(group={self.owner!r}, base_url={redact_url(self.base_url)!r})"

    def auth_header(self, token: str) -> tuple[str, str]:
        return "PRIVATE-TOKEN", token

    def _projects_url(self) -> str:
        return f"{self._group_url()}/projects"

    def _group_url(self) -> str:
        return f"{self.base_url}/api/v4/groups/{quote(self.owner, safe='')}"

    def _filters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "include_subgroups": "true" if self.include_subgroups else "false",
            # Projects shared *into* the group belong to another namespace (and scope).
            "with_shared": "false",
        }
        if not self.include_archived:
            params["archived"] = "false"
        return params

    def _owner_info(self, listing: Listing) -> dict[str, Any]:
        params = {"with_projects": "false"}
        return self._http.get_json(
            self._group_url(), params=params, headers=listing.headers, expect=dict
        ).data

    def _item_id(self, item: Any) -> str | None:
        if not isinstance(item, dict) or item.get("id") is None:
            return None
        return str(item["id"]) if item.get("path_with_namespace") else None

    def _first_page(self, listing: Listing) -> PageRequest:
        listing.extra["totals"] = set()
        params = {
            **self._filters(),
            "per_page": 100,
            "order_by": "id",
            "sort": "asc",
            "pagination": "keyset",
        }
        return PageRequest(self._projects_url(), params)

    def _next_page(self, page: Page, request: PageRequest, listing: Listing) -> PageRequest | None:
        """``Link: rel="next"`` (keyset, or offset with links), else ``x-next-page``."""
        total = parse_int_header(page.headers, "x-total")
        if total is not None:
            listing.extra["totals"].add(total)
        nxt = self._next_link(page)
        if nxt is not None:
            return nxt
        next_page = (page.headers.get("x-next-page") or "").strip()
        if not next_page:
            return None
        if not next_page.isdigit():
            raise ListingError(
                f"page {self._http.safe_url(page.url)}: unreadable x-next-page header "
                f"{next_page[:20]!r}"
            )
        params = {**self._filters(), "per_page": 100, "order_by": "id", "sort": "asc"}
        return PageRequest(self._projects_url(), {**params, "page": int(next_page)})

    def _check_complete(self, listing: Listing) -> str | None:
        """Offset pages carry ``x-total``; a keyset listing asks for it (``per_page=1``)."""
        totals: set[int] = listing.extra["totals"]
        if not totals:
            count = self._http.get_json(
                self._projects_url(),
                params={**self._filters(), "per_page": 1},
                headers=listing.headers,
                expect=list,
            )
            total = parse_int_header(count.headers, "x-total")
            if total is None:
                return (
                    "GitLab reported no x-total for the group's projects (it omits it past "
                    "10,000): nothing to check the listing against"
                )
            totals = {total}
        return count_check(self.noun, len(listing.seen_ids), totals, "x-total")

    def _coverage(self, listing: Listing) -> dict[str, Any]:
        return {**super()._coverage(listing), "include_subgroups": self.include_subgroups}

    def _record(self, project: dict[str, Any]) -> ProjectRecord:
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
        return host_record(
            self,
            project,
            name=str(project.get("name") or project.get("path") or project["id"]),
            location=str(project["path_with_namespace"]),
            clone_url=project.get("http_url_to_repo"),
            web_url=web_url,
            attributes=attributes,
            # the list names the source of a fork; a project without it is not one
            fork=bool(forked),
            visibility=text_or_none(project.get("visibility")),
            topics=tuple(str(t) for t in topics if isinstance(t, str | int)),
            stars=int_or_none(project.get("star_count")),
            last_activity_at=parse_timestamp(project.get("last_activity_at")),
        )
