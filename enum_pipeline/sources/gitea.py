"""Gitea (and Forgejo) organisations and users as a source of projects.

One scope per source: ``gitea:<host>/<owner>``. Gitea silently clamps ``limit`` to its
``MAX_RESPONSE_ITEMS``, so a page shorter than asked for says nothing about the end. The listing
walks ``page=1, 2, ...`` on the configured base URL (the ``Link`` header is built from the
server's ``ROOT_URL``, which may name another host, so it is read only as a "there is more" hint)
and stops on an empty page, or when there is no ``next`` link and ``X-Total-Count`` is reached.
The scope is complete only when every page was read and the totals agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.codehost import CodeHostSource, check_owner
from enum_pipeline.sources.http import (
    PageError,
    describe_page_error,
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

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"token {token}"

    def scan(self) -> Iterator[ScanItem]:
        """Yield the owner's repositories, then one verdict for the owner's scope."""
        headers, _ = self._start()

        segment = "orgs" if self.owner_type == "org" else "users"
        url = f"{self.base_url}/api/v1/{segment}/{quote(self.owner, safe='')}/repos"
        what = f"{self.owner_type} {self.owner!r}"
        seen_ids: set[str] = set()
        totals: set[int] = set()
        yielded = malformed = pages = 0
        page_no = 1
        page_size: int | None = None
        failure: str | None = None
        try:
            while True:
                try:
                    page = self._http.get_json(
                        url,
                        params={"limit": PAGE_LIMIT, "page": page_no},
                        headers=headers,
                        expect=list,
                    )
                except PageError as exc:
                    failure = describe_page_error(exc, what=what, first_page=pages == 0)
                    break
                pages += 1
                total = parse_int_header(page.headers, "x-total-count", "x-total")
                if total is not None:
                    totals.add(total)
                if not page.data:
                    break  # an empty page: the end
                if page_size is None:
                    page_size = len(page.data)  # what the server really serves per page
                new = bad = 0
                for repo in page.data:
                    repo_id = repo.get("id") if isinstance(repo, dict) else None
                    if repo_id is None or not repo.get("name"):
                        bad += 1
                        continue
                    if str(repo_id) in seen_ids:
                        continue
                    seen_ids.add(str(repo_id))
                    new += 1
                    yield self._record(repo)
                    yielded += 1
                malformed += bad
                if new == 0 and bad == 0:
                    failure = (
                        f"page {self._http.safe_url(page.url)} repeated earlier repositories "
                        "only: the server does not seem to honour the page parameter"
                    )
                    break
                has_next = "next" in parse_link_header(page.headers.get("link"), base=page.url)
                if not has_next and total is not None and len(seen_ids) + malformed >= total:
                    break
                page_no += 1
        finally:
            self._http.close()

        if failure is None and malformed:
            failure = f"{malformed} repositories without an id or name in the listing"
        if failure is None and totals:
            if len(totals) > 1:
                failure = (
                    f"the repository count changed during the listing (X-Total-Count "
                    f"{sorted(totals)}): pages may have skipped repositories"
                )
            elif len(seen_ids) != next(iter(totals)):
                failure = (
                    f"server reported X-Total-Count={next(iter(totals))} repositories but "
                    f"{len(seen_ids)} were read"
                )
        yield ScopeVerdict(
            scope_key=self.scope_key,
            source_kind=self.kind,
            complete=failure is None,
            seen=yielded,
            reason=failure,
            fingerprint={
                "api_url": redact_url(self.base_url),
                "owner_type": self.owner_type,
                "pages": pages,
                "page_size": page_size,
                "listed": len(seen_ids),
            },
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
