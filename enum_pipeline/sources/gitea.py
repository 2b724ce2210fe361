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
from typing import Any, Unpack
from urllib.parse import quote

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.codehost import CodeHostSource
from enum_pipeline.sources.fields import FILLED_COLUMNS
from enum_pipeline.sources.http import Page, parse_int_header, parse_link_header
from enum_pipeline.sources.listing import (
    HttpOptions,
    Listing,
    ListingError,
    PageRequest,
    check_owner,
    count_check,
)
from enum_pipeline.sources.repos import int_or_none, parse_timestamp, repo_record

log = logging.getLogger(__name__)

PAGE_LIMIT = 50


class GiteaSource(CodeHostSource):
    """Every repository of one Gitea/Forgejo organisation or user."""

    kind = "gitea"
    filled_columns = FILLED_COLUMNS["gitea"]
    repo_by_id_path = "/api/v1/repositories/{id}"
    log = log
    user_path = "/api/v1/user"

    def __init__(
        self,
        owner: str,
        base_url: str,
        owner_type: str = "org",
        token_env: str | None = "GITEA_TOKEN",
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(*check_owner(owner, owner_type, "Gitea"), base_url, token_env, **http)

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"token {token}"

    def _owner_url(self) -> str:
        segment = "orgs" if self.owner_type == "org" else "users"
        return f"{self.base_url}/api/v1/{segment}/{quote(self.owner, safe='')}"

    def _owner_info(self, listing: Listing) -> dict[str, Any]:
        return self._http.get_json(self._owner_url(), headers=listing.headers, expect=dict).data

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
        parent = repo.get("parent") if isinstance(repo.get("parent"), dict) else {}
        extra = {
            "forked_from": parent.get("full_name"),
            "mirror": bool(repo.get("mirror", False)),
            "empty": bool(repo.get("empty", False)),
        }
        # Gitea 1.22+ lists the SPDX ids of the licence files it detected
        licenses = [x for x in repo.get("licenses") or [] if isinstance(x, str) and x]
        return repo_record(
            self,
            repo,
            extra=extra,
            visibility=self._visibility(repo),
            license=" AND ".join(sorted(licenses)) if licenses else None,
            stars=int_or_none(repo.get("stars_count")),
            last_activity_at=parse_timestamp(repo.get("updated_at")),
        )
