"""Gitea (and Forgejo) organisations and users as a source of projects.

One scope per source: ``gitea:<host>/<owner>``. Gitea silently clamps ``limit`` to its
``MAX_RESPONSE_ITEMS``, so a page shorter than asked for says nothing about the end. The listing
walks ``page=1, 2, ...`` on the configured base URL (the ``Link`` header is built from the
server's ``ROOT_URL``, which may name another host, so it is read only as a "there is more" hint)
and stops on an empty page, or when there is no ``next`` link and ``X-Total-Count`` is reached.
The scope is complete only when every page was read and ``X-Total-Count`` was sent and agrees.

Identity: the owner's numeric id and the login the token belongs to (``GET /api/v1/user``), or
``anonymous``. Coverage: public repositories only without a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.codehost import (
    CodeHostSource,
    Listing,
    ListingError,
    PageRequest,
    check_owner,
    count_check,
)
from enum_pipeline.sources.http import (
    Page,
    parse_int_header,
    parse_link_header,
    parse_timestamp,
    web_host,
)
from enum_pipeline.sources.remotes import redact_url
from enum_pipeline.sources.repos import int_or_none, repo_attributes, repo_record

log = logging.getLogger(__name__)

PAGE_LIMIT = 50


class GiteaSource(CodeHostSource):
    """Every repository of one Gitea/Forgejo organisation or user."""

    kind = "gitea"
    log = log

    def __init__(
        self,
        owner: str,
        base_url: str,
        owner_type: str = "org",
        token_env: str | None = "GITEA_TOKEN",
        client: httpx.Client | None = None,
        max_retries: int = 5,
        max_wait_seconds: float = 300,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.owner, self.owner_type = check_owner(owner, owner_type, "Gitea")
        super().__init__(
            base_url,
            token_env,
            client=client,
            max_retries=max_retries,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
        )
        self.host = web_host(self.base_url)
        self.scope_key = f"gitea:{self.host}/{self.owner.lower()}"

    def __repr__(self) -> str:
        return (
            f"GiteaSource(owner={self.owner!r}, owner_type={self.owner_type!r}, "
            f"base_url={redact_url(self.base_url)!r})"
        )

    @property
    def owner_label(self) -> str:
        return f"{self.owner_type} {self.owner!r}"

    @property
    def owner_name(self) -> str:
        return self.owner

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"token {token}"

    def _owner_url(self) -> str:
        segment = "orgs" if self.owner_type == "org" else "users"
        return f"{self.base_url}/api/v1/{segment}/{quote(self.owner, safe='')}"

    def _identify(self, listing: Listing) -> dict[str, Any]:
        """Whom the token belongs to (``GET /api/v1/user``), then the owner's id."""
        principal = self._get_user(listing, "/api/v1/user", "login")
        listing.extra["principal"] = principal
        owner = self._http.get_json(self._owner_url(), headers=listing.headers, expect=dict).data
        if owner.get("id") is None:
            raise ListingError(f"the answer for {self.owner_label} carries no id")
        return {"owner_id": owner["id"], "principal": principal}

    def _visibility(self, item: dict[str, Any]) -> str:
        if item.get("private"):
            return "private"
        return "internal" if item.get("internal") else "public"

    def _first_page(self, listing: Listing) -> PageRequest:
        listing.extra["totals"] = set()
        return PageRequest(f"{self._owner_url()}/repos", {"limit": PAGE_LIMIT, "page": 1})

    def _next_page(self, page: Page, request: PageRequest, listing: Listing) -> PageRequest | None:
        """The next ``page=``; the end is an empty page, or ``X-Total-Count`` reached without a
        ``next`` link (a short page says nothing: the server clamps ``limit``)."""
        total = parse_int_header(page.headers, "x-total-count", "x-total")
        if total is not None:
            listing.extra["totals"].add(total)
        if not page.data:
            return None
        if listing.page_new == 0 and listing.page_malformed == 0:
            raise ListingError(
                f"page {self._http.safe_url(page.url)} repeated earlier repositories only: the "
                "server does not seem to honour the page parameter"
            )
        has_next = "next" in parse_link_header(page.headers.get("link"), base=page.url)
        read = len(listing.seen_ids) + listing.malformed
        if not has_next and total is not None and read >= total:
            return None
        params = dict(request.params or {})
        params["page"] = int(params.get("page", 1)) + 1
        return PageRequest(request.url, params)

    def _check_complete(self, listing: Listing) -> str | None:
        return count_check(
            self.noun, len(listing.seen_ids), listing.extra["totals"], "X-Total-Count"
        )

    def _record(self, repo: dict[str, Any]) -> ProjectRecord:
        if repo.get("private"):
            visibility = "private"
        elif repo.get("internal"):
            visibility = "internal"
        else:
            visibility = "public"
        parent = repo.get("parent") if isinstance(repo.get("parent"), dict) else {}
        attributes = repo_attributes(
            repo,
            forked_from=parent.get("full_name"),
            mirror=bool(repo.get("mirror", False)),
            empty=bool(repo.get("empty", False)),
        )
        # Gitea 1.22+ lists the SPDX ids of the licence files it detected
        licenses = [x for x in repo.get("licenses") or [] if isinstance(x, str) and x]
        return repo_record(
            kind=self.kind,
            host=self.host,
            scope_key=self.scope_key,
            owner=self.owner,
            repo=repo,
            attributes=attributes,
            visibility=visibility,
            license=" AND ".join(sorted(licenses)) if licenses else None,
            stars=int_or_none(repo.get("stars_count")),
            last_activity_at=parse_timestamp(repo.get("updated_at")),
        )
