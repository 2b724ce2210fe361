"""Bitbucket Cloud workspaces (optionally one project of them) as a source of projects.

One scope per source: ``bitbucket:<web host>/<workspace>``, or ``…/<workspace>/<project key>``
for one project. The listing is ``GET /2.0/repositories/{workspace}`` (``q=project.key="K"``
for a project), oldest first, following the ``next`` URL each page names; every page carries
``size``, the number of repositories the listing holds, and the scope is complete only when
every page was read and ``size`` never moved and equals what was listed. A repository's stable
id is its ``uuid`` (renames keep it); the workspace's ``uuid`` and whom the token belongs to
(``GET /2.0/user``) are the identity. Bitbucket has no archived flag, no stars, no topics.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Unpack
from urllib.parse import quote

from pydantic import Field

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.codehost import CodeHostSource
from enum_pipeline.sources.fields import CODE_HOST_COMMON
from enum_pipeline.sources.hostconfig import CodeHostConfig
from enum_pipeline.sources.http import Page, same_origin, web_host
from enum_pipeline.sources.listing import (
    HttpOptions,
    Listing,
    ListingError,
    PageRequest,
    count_check,
)
from enum_pipeline.sources.repos import host_record, parse_timestamp, text_or_none

log = logging.getLogger(__name__)

PAGE_LEN = 100


class BitbucketSource(CodeHostSource):
    """Every repository of one Bitbucket Cloud workspace (or one of its projects)."""

    kind = "bitbucket"
    # Bitbucket's repository object: no archived flag, no stars, no topics, no licence
    filled_columns = frozenset(CODE_HOST_COMMON - {"archived", "stars", "topics"} | {"language"})
    repo_by_id_path = "/repositories/{owner}/{id}"
    log = log
    user_path = "/user"
    user_field = "username"
    include_archived = True  # Bitbucket cannot archive a repository

    def __init__(
        self,
        workspace: str,
        base_url: str = "https://api.bitbucket.org/2.0",
        token_env: str | None = "BITBUCKET_TOKEN",
        project: str | None = None,
        include_forks: bool = True,
        **http: Unpack[HttpOptions],
    ) -> None:
        workspace = (workspace or "").strip()
        if not workspace or "/" in workspace:
            raise ValueError(f"invalid Bitbucket workspace {workspace!r}")
        if project is not None and not project.strip():
            raise ValueError("project must be a project key, not an empty string")
        super().__init__(workspace, "workspace", base_url, token_env, **http)
        self.project = project.strip() if project else None
        self.include_forks = include_forks
        if self.project:
            self.scope_key = f"{self.scope_key}/{self.project.lower()}"

    def _web_host(self, base_url: str) -> str:
        """``api.bitbucket.org`` → ``bitbucket.org``."""
        host = web_host(base_url)
        return host[len("api.") :] if host.startswith("api.") else host

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"Bearer {token}"

    def _owner_info(self, listing: Listing) -> dict[str, Any]:
        url = f"{self.base_url}/workspaces/{quote(self.owner, safe='')}"
        data = self._http.get_json(url, headers=listing.headers, expect=dict).data
        return {**data, "id": data.get("uuid")}

    def _item_id(self, item: Any) -> str | None:
        if not isinstance(item, dict) or not item.get("uuid") or not item.get("slug"):
            return None
        return str(item["uuid"])

    def _visibility(self, item: dict[str, Any]) -> str:
        return "private" if item.get("is_private") else "public"

    def _visibilities(self, listing: Listing) -> list[str]:
        return ["public"] if listing.token is None else ["private", "public"]

    def _wanted(self, item: dict[str, Any]) -> bool:
        if item.get("parent") and not self.include_forks:
            return False
        return super()._wanted({**item, "fork": False, "name": item["slug"]})

    def _first_page(self, listing: Listing) -> PageRequest:
        listing.extra["totals"] = set()
        params: dict[str, Any] = {"pagelen": PAGE_LEN, "sort": "created_on"}
        if self.project:
            params["q"] = f'project.key="{self.project}"'
        url = f"{self.base_url}/repositories/{quote(self.owner, safe='')}"
        return PageRequest(url, params, items_key="values")

    def _next_page(self, page: Page, request: PageRequest, listing: Listing) -> PageRequest | None:
        size = page.data.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            listing.extra["totals"].add(size)
        nxt = page.data.get("next")
        if nxt is None:
            return None
        shown = self._http.safe_url(page.url)
        if not isinstance(nxt, str):
            raise ListingError(f"page {shown}: unreadable next URL")
        if not same_origin(nxt, self.base_url):
            raise ListingError(
                f"page {shown}: next URL points to another origin "
                f"({self._http.safe_url(nxt)}); not followed with credentials"
            )
        return PageRequest(nxt, items_key="values")

    def _check_complete(self, listing: Listing) -> str | None:
        return count_check(self.noun, len(listing.seen_ids), listing.extra["totals"], "size")

    def _coverage(self, listing: Listing) -> dict[str, Any]:
        coverage = super()._coverage(listing)
        if self.project:
            coverage["project"] = self.project
        return coverage

    def _record(self, repo: dict[str, Any]) -> ProjectRecord:
        links = repo.get("links") if isinstance(repo.get("links"), dict) else {}
        clones = {
            c.get("name"): c.get("href")
            for c in links.get("clone") or []
            if isinstance(c, dict) and isinstance(c.get("href"), str)
        }
        html = links.get("html") if isinstance(links.get("html"), dict) else {}
        mainbranch = repo.get("mainbranch") if isinstance(repo.get("mainbranch"), dict) else {}
        project = repo.get("project") if isinstance(repo.get("project"), dict) else {}
        parent = repo.get("parent") if isinstance(repo.get("parent"), dict) else None
        slug = str(repo["slug"])
        item = {
            "id": str(repo["uuid"]).strip("{}"),
            "default_branch": mainbranch.get("name"),
            "description": repo.get("description"),
            "created_at": repo.get("created_on"),
        }
        return host_record(
            self,
            item,
            name=slug,
            location=str(repo.get("full_name") or f"{self.owner}/{slug}"),
            clone_url=clones.get("https"),
            web_url=html.get("href"),
            attributes={
                "id": repo["uuid"],
                "full_name": repo.get("full_name"),
                "project_key": project.get("key"),
                "forked_from": parent.get("full_name") if parent else None,
                "updated_on": repo.get("updated_on"),
                "size": repo.get("size"),
            },
            fork=parent is not None,
            visibility=self._visibility(repo),
            language=text_or_none(repo.get("language")),
            last_activity_at=parse_timestamp(repo.get("updated_on")),
        )


class BitbucketSourceConfig(CodeHostConfig):
    """Repositories of a Bitbucket Cloud workspace, or of one project of it."""

    source = BitbucketSource
    kind: Literal["bitbucket"]
    workspace: str = Field(min_length=1)
    project: str | None = Field(None, description="Only this project's repositories (its key).")
    base_url: str = "https://api.bitbucket.org/2.0"
    token_env: str | None = "BITBUCKET_TOKEN"
    include_forks: bool = Field(True, description="List forks too.")


#: The configuration model of this kind (``sources.kinds`` finds it).
CONFIG = BitbucketSourceConfig
