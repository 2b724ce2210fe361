"""GitHub (and GitHub Enterprise Server) organisations and users as a source of projects.

One scope per source: ``github:<web host>/<owner>``. The listing follows the ``Link: rel="next"``
header page after page and never takes a short page for the end; the scope is complete only when
every page was read. A page that still fails after its retries ends the scope incomplete, with
the records already read yielded (they are real and fresh).

GitHub's listing has no total and pages by offset, so a repository deleted while the pages are
read shifts a later one onto a page already read, where it is never seen. The owner's repository
counts (``GET /orgs/{org}`` or ``/users/{user}``) are read before and after the listing: if they
moved, or fewer public repositories were listed than the owner has, the scope is incomplete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.codehost import CodeHostSource, check_owner
from enum_pipeline.sources.http import (
    PageError,
    describe_page_error,
    parse_link_header,
    parse_timestamp,
    same_origin,
    web_host,
)
from enum_pipeline.sources.remotes import redact_url
from enum_pipeline.sources.repos import int_or_none, repo_attributes, repo_record, text_or_none

log = logging.getLogger(__name__)

#: Counts of ``GET /orgs/{org}`` / ``/users/{user}`` (the private ones only for a token holder).
_COUNT_FIELDS = ("public_repos", "total_private_repos", "owned_private_repos")


def github_web_host(base_url: str) -> str:
    """The web host behind an API base URL: ``api.github.com`` → ``github.com``.

    GitHub Enterprise Server (``https://ghe.example.com/api/v3``) keeps its host; GHE.com data
    residency API hosts (``api.<tenant>.ghe.com``) lose their ``api.`` prefix.
    """
    host = web_host(base_url)
    bare = host.split(":", 1)[0]
    if bare == "api.github.com" or (bare.startswith("api.") and bare.endswith(".ghe.com")):
        return host[len("api.") :]
    return host


class GitHubSource(CodeHostSource):
    """Every repository of one GitHub organisation or user, as ``ProjectRecord``s."""

    kind = "github"
    log = log

    def __init__(
        self,
        owner: str,
        owner_type: str = "org",
        base_url: str = "https://api.github.com",
        token_env: str | None = "GITHUB_TOKEN",
        include_archived: bool = True,
        include_forks: bool = True,
        client: httpx.Client | None = None,
        max_retries: int = 5,
        max_wait_seconds: float = 300,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.owner, self.owner_type = check_owner(owner, owner_type, "GitHub")
        super().__init__(
            base_url,
            token_env,
            client=client,
            max_retries=max_retries,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
        )
        self.include_archived = include_archived
        self.include_forks = include_forks
        self.host = github_web_host(self.base_url)
        self.scope_key = f"github:{self.host}/{self.owner.lower()}"

    def __repr__(self) -> str:
        return (
            f"GitHubSource(owner={self.owner!r}, owner_type={self.owner_type!r}, "
            f"base_url={redact_url(self.base_url)!r})"
        )

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"Bearer {token}"

    def _first_page(self, headers: dict[str, str], token: str | None) -> tuple[str, dict]:
        """The first listing page. A user listed with their own token: ``/user/repos``, which
        holds their private repositories too (``/users/{user}/repos`` shows public ones only).
        """
        # Oldest first: repositories created during the listing land at the end, not mid-list.
        params: dict[str, Any] = {"per_page": 100, "sort": "created", "direction": "asc"}
        if self.owner_type == "org":
            url = f"{self.base_url}/orgs/{quote(self.owner, safe='')}/repos"
            return url, {**params, "type": "all"}
        if token:
            me = self._http.get_json(f"{self.base_url}/user", headers=headers, expect=dict)
            if str(me.data.get("login", "")).lower() == self.owner.lower():
                url = f"{self.base_url}/user/repos"
                return url, {**params, "affiliation": "owner", "visibility": "all"}
        url = f"{self.base_url}/users/{quote(self.owner, safe='')}/repos"
        return url, {**params, "type": "owner"}

    def _owner_counts(self, headers: dict[str, str]) -> dict[str, int]:
        segment = "orgs" if self.owner_type == "org" else "users"
        url = f"{self.base_url}/{segment}/{quote(self.owner, safe='')}"
        data = self._http.get_json(url, headers=headers, expect=dict).data
        return {f: data[f] for f in _COUNT_FIELDS if isinstance(data.get(f), int)}

    def _count_check(
        self, what: str, before: dict[str, int], after: dict[str, int], listed_public: int
    ) -> str | None:
        """Why the listing cannot be trusted to be whole, or None."""
        if before != after:
            moved = ", ".join(
                f"{f} {before.get(f)}→{after.get(f)}"
                for f in _COUNT_FIELDS
                if before.get(f) != after.get(f)
            )
            return (
                f"the repositories of {what} changed while they were listed ({moved}); a page "
                "may have shifted past a repository, the next run reads them again"
            )
        public = after.get("public_repos")
        if public is not None and listed_public < public:
            return f"the listing holds {listed_public} public repositories, {what} has {public}"
        return None

    def scan(self) -> Iterator[ScanItem]:
        """Yield the owner's repositories, then one verdict for the owner's scope."""
        headers, token = self._start("application/vnd.github+json")
        headers["X-GitHub-Api-Version"] = "2022-11-28"

        what = f"{self.owner_type} {self.owner!r}"
        url, params, listing = "", {}, None
        seen_ids: set[str] = set()
        visited: set[str] = set()
        yielded = filtered = malformed = pages = listed_public = 0
        failure: str | None = None
        counts: dict[str, int] = {}
        try:
            try:
                counts = self._owner_counts(headers)
                url, params = self._first_page(headers, token)
                listing = urlsplit(url).path
            except PageError as exc:
                failure = describe_page_error(exc, what=what, first_page=True)
            while failure is None:
                try:
                    page = self._http.get_json(url, params=params, headers=headers, expect=list)
                except PageError as exc:
                    failure = describe_page_error(exc, what=what, first_page=pages == 0)
                    break
                pages += 1
                visited.add(page.url)
                for repo in page.data:
                    repo_id = repo.get("id") if isinstance(repo, dict) else None
                    if repo_id is None or not repo.get("name"):
                        malformed += 1
                        continue
                    if str(repo_id) in seen_ids:
                        continue  # the list shifted between pages: already yielded
                    seen_ids.add(str(repo_id))
                    private = "private" if repo.get("private") else "public"
                    if (repo.get("visibility") or private) == "public":
                        listed_public += 1
                    if (repo.get("archived") and not self.include_archived) or (
                        repo.get("fork") and not self.include_forks
                    ):
                        filtered += 1
                        continue
                    yield self._record(repo)
                    yielded += 1
                nxt = parse_link_header(page.headers.get("link"), base=page.url).get("next")
                if nxt is None:
                    break
                if not same_origin(nxt, self.base_url):
                    failure = (
                        f"page {self._http.safe_url(page.url)}: next link points to another "
                        f"origin ({self._http.safe_url(nxt)}); not followed with credentials"
                    )
                    break
                if str(httpx.URL(nxt)) in visited:
                    failure = f"pagination loop: next link {self._http.safe_url(nxt)} seen before"
                    break
                url, params = nxt, None
            if failure is None:
                try:
                    after = self._owner_counts(headers)
                except PageError as exc:
                    failure = describe_page_error(exc, what=what, first_page=False)
                else:
                    failure = self._count_check(what, counts, after, listed_public)
        finally:
            self._http.close()

        if failure is None and malformed:
            failure = f"{malformed} repositories without an id or name in the listing"
        yield ScopeVerdict(
            scope_key=self.scope_key,
            source_kind=self.kind,
            complete=failure is None,
            seen=yielded,
            reason=failure,
            fingerprint={
                "api_url": redact_url(self.base_url),
                "owner_type": self.owner_type,
                "listing": listing,
                "pages": pages,
                "listed": len(seen_ids),
                "listed_public": listed_public,
                "owner_counts": counts,
                "filtered_out": filtered,
            },
        )

    def _record(self, repo: dict[str, Any]) -> ProjectRecord:
        visibility = repo.get("visibility")
        if not visibility and repo.get("private") is not None:
            visibility = "private" if repo.get("private") else "public"
        licence = repo.get("license") if isinstance(repo.get("license"), dict) else {}
        pushed = parse_timestamp(repo.get("pushed_at"))
        return repo_record(
            kind=self.kind,
            host=self.host,
            scope_key=self.scope_key,
            owner=self.owner,
            repo=repo,
            attributes=repo_attributes(
                repo, pushed_at=repo.get("pushed_at"), forks_count=repo.get("forks_count")
            ),
            visibility=visibility or None,
            last_commit_at=pushed,
            license=text_or_none(licence.get("spdx_id")),
            stars=int_or_none(repo.get("stargazers_count")),
            last_activity_at=pushed,
        )
