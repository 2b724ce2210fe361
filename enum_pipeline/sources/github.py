"""GitHub (and GitHub Enterprise Server) organisations and users as a source of projects.

One scope per source: ``github:<web host>/<owner>``. The listing follows the ``Link: rel="next"``
header page after page and never takes a short page for the end; the scope is complete only when
every page was read. A page that still fails after its retries ends the scope incomplete, with
the records already read yielded (they are real and fresh).

GitHub's listing has no total and pages by offset, so a repository deleted while the pages are
read shifts a later one onto a page already read, where it is never seen. The owner's repository
counts (``GET /orgs/{org}``, ``/users/{user}``, or ``/user`` for the token's own account) are read
before and after the listing: if they moved, or fewer public repositories were listed than the
owner has, or fewer private ones where the token can see their count, the scope is incomplete.

Identity: the owner's numeric id and the login the token belongs to (``GET /user``), or
``anonymous``. Coverage: public only, unless the owner's private count is visible to the token.

As a GitHub App (``app_id``; see ``githubapp``) the listing is ``GET /installation/repositories``,
checked against its ``total_count``; an installation granted *selected* repositories records so
in its identity and coverage, and every repository it does not list is out of coverage.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Unpack
from urllib.parse import quote

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.codehost import CodeHostSource
from enum_pipeline.sources.fields import FILLED_COLUMNS
from enum_pipeline.sources.githubapp import AppAuthError, AppInstallation, load_private_key
from enum_pipeline.sources.http import Page, web_host
from enum_pipeline.sources.listing import (
    HttpOptions,
    Listing,
    ListingError,
    PageRequest,
    check_owner,
    count_check,
)
from enum_pipeline.sources.repos import int_or_none, parse_timestamp, repo_record, text_or_none

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
    filled_columns = FILLED_COLUMNS["github"]
    repo_by_id_path = "/repositories/{id}"
    log = log
    accept = "application/vnd.github+json"
    user_path = "/user"

    def __init__(
        self,
        owner: str,
        owner_type: str = "org",
        base_url: str = "https://api.github.com",
        token_env: str | None = "GITHUB_TOKEN",
        include_archived: bool = True,
        include_forks: bool = True,
        app_id: int | str | None = None,
        private_key_env: str | None = None,
        private_key_file: str | None = None,
        installation_id: int | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        if app_id is not None:
            token_env = None  # the App's installation token authenticates instead
        super().__init__(*check_owner(owner, owner_type, "GitHub"), base_url, token_env, **http)
        self.include_archived = include_archived
        self.include_forks = include_forks
        self.app_id = app_id
        self.installation_id = installation_id
        self._app_key = (
            load_private_key(private_key_env, private_key_file) if app_id is not None else None
        )

    def _web_host(self, base_url: str) -> str:
        return github_web_host(base_url)

    def auth_header(self, token: str) -> tuple[str, str]:
        return "Authorization", f"Bearer {token}"

    def _start(self) -> tuple[Listing, str | None]:
        listing, failure = super()._start()
        listing.headers["X-GitHub-Api-Version"] = "2022-11-28"
        if self._app_key is None or failure is not None:
            return listing, failure
        app = AppInstallation(
            app_id=str(self.app_id),
            private_key=self._app_key,
            base_url=self.base_url,
            http=self._http,
            owner=self.owner,
            owner_type=self.owner_type,
            installation_id=self.installation_id,
        )
        listing.extra["app"] = app
        try:
            listing.token = app.token()
        except AppAuthError as exc:
            return listing, str(exc)
        self._before_request(listing)
        return listing, None

    def _before_request(self, listing: Listing) -> None:
        """Renew the App's installation token before it expires."""
        app = listing.extra.get("app")
        if app is not None:
            try:
                listing.token = app.token()
            except AppAuthError as exc:
                raise ListingError(str(exc)) from None
            listing.headers["Authorization"] = f"Bearer {listing.token}"

    def _get_user(self, listing: Listing) -> str:
        app = listing.extra.get("app")
        return app.principal if app is not None else super()._get_user(listing)

    def _identify(self, listing: Listing) -> dict[str, Any]:
        """The owner and principal, and an App installation's repository selection."""
        identity = super()._identify(listing)
        app = listing.extra.get("app")
        if app is not None:
            identity["repository_selection"] = app.repository_selection
        return identity

    def _owner_info(self, listing: Listing) -> dict[str, Any]:
        """Which listing the principal gets, then the owner and its counts."""
        if "app" in listing.extra:
            listing.extra["listing"] = "installation"  # what the installation was granted
        elif self.owner_type == "org":
            listing.extra["listing"] = "org"
        elif listing.principal.lower() == self.owner.lower():
            listing.extra["listing"] = "own"  # /user/repos holds their private ones too
        else:
            listing.extra["listing"] = "public"  # /users/{user}/repos: public ones only
        data = self._owner(listing)
        listing.extra["counts"] = self._counts(data)
        return data

    def _owner(self, listing: Listing) -> dict[str, Any]:
        """``GET /orgs/{org}``, ``/users/{user}``, or ``/user`` for the token's own account (the
        only one answering with its private counts)."""
        if listing.extra.get("listing") == "own":
            url = f"{self.base_url}/user"
        else:
            segment = "orgs" if self.owner_type == "org" else "users"
            url = f"{self.base_url}/{segment}/{quote(self.owner, safe='')}"
        return self._http.get_json(url, headers=listing.headers, expect=dict).data

    @staticmethod
    def _counts(data: dict[str, Any]) -> dict[str, int]:
        return {f: data[f] for f in _COUNT_FIELDS if isinstance(data.get(f), int)}

    def _first_page(self, listing: Listing) -> PageRequest:
        # Oldest first: repositories created during the listing land at the end, not mid-list.
        params: dict[str, Any] = {"per_page": 100, "sort": "created", "direction": "asc"}
        owner = quote(self.owner, safe="")
        if listing.extra["listing"] == "installation":
            url = f"{self.base_url}/installation/repositories"
            return PageRequest(url, {"per_page": 100}, items_key="repositories")
        if self.owner_type == "org":
            return PageRequest(f"{self.base_url}/orgs/{owner}/repos", {**params, "type": "all"})
        if listing.extra["listing"] == "own":
            own = {**params, "affiliation": "owner", "visibility": "all"}
            return PageRequest(f"{self.base_url}/user/repos", own)
        return PageRequest(f"{self.base_url}/users/{owner}/repos", {**params, "type": "owner"})

    def _next_page(self, page: Page, request: PageRequest, listing: Listing) -> PageRequest | None:
        nxt = self._next_link(page)
        if request.items_key and nxt is not None:
            nxt = replace(nxt, items_key=request.items_key)
        if request.items_key and isinstance(page.data.get("total_count"), int):
            listing.extra.setdefault("totals", set()).add(page.data["total_count"])
        return nxt

    def _private_field(self) -> str:
        return "total_private_repos" if self.owner_type == "org" else "owned_private_repos"

    def _visibilities(self, listing: Listing) -> list[str]:
        """Private (and internal) ones only when the owner's private count is visible to the
        token and the listing endpoint returns them."""
        if listing.extra.get("listing") == "installation":
            return ["internal", "private", "public"]  # every one it was granted
        if (
            listing.token is None
            or listing.extra.get("listing") not in ("org", "own")
            or self._private_field() not in listing.extra.get("counts", {})
        ):
            return ["public"]
        return (
            ["internal", "private", "public"] if self.owner_type == "org" else ["private", "public"]
        )

    def _check_complete(self, listing: Listing) -> str | None:
        """The owner's counts, read again, must not have moved, and the listing must hold as
        many public (and, where counted, private) repositories as the owner has."""
        if listing.extra.get("listing") == "installation":
            totals = listing.extra.get("totals", set())
            return count_check("repositories", len(listing.seen_ids), totals, "total_count")
        before, after = listing.extra["counts"], self._counts(self._owner(listing))
        what = self.owner_label
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
        if public is None:
            return f"{what} reports no public_repos count: nothing to check the listing against"
        listed_public = listing.visibilities["public"]
        if listed_public < public:
            return f"the listing holds {listed_public} public repositories, {what} has {public}"
        private = after.get(self._private_field())
        listed_private = listing.visibilities["private"] + listing.visibilities["internal"]
        if "private" in self._visibilities(listing) and listed_private < (private or 0):
            return f"the listing holds {listed_private} private repositories, {what} has {private}"
        return None

    def _coverage(self, listing: Listing) -> dict[str, Any]:
        """What the listing could see; an App installation's ``repository_selection`` too."""
        coverage = super()._coverage(listing)
        app = listing.extra.get("app")
        if app is not None:
            coverage["repository_selection"] = app.repository_selection
        return coverage

    def _witness_refusal(self, listing: Listing, reading: dict[str, Any]) -> str | None:
        app = listing.extra.get("app")
        if app is not None and app.repository_selection == "selected":
            return (
                f"the GitHub App installation {app.installation_id} sees selected repositories "
                f"of {self.owner_label} only: a not-found answer may be one it was not granted"
            )
        return super()._witness_refusal(listing, reading)

    def _record(self, repo: dict[str, Any]) -> ProjectRecord:
        visibility = repo.get("visibility")
        if not visibility and repo.get("private") is not None:
            visibility = "private" if repo.get("private") else "public"
        licence = repo.get("license") if isinstance(repo.get("license"), dict) else {}
        pushed = parse_timestamp(repo.get("pushed_at"))
        return repo_record(
            self,
            repo,
            extra={"pushed_at": repo.get("pushed_at"), "forks_count": repo.get("forks_count")},
            visibility=visibility or None,
            last_commit_at=pushed,
            license=text_or_none(licence.get("spdx_id")),
            stars=int_or_none(repo.get("stargazers_count")),
            last_activity_at=pushed,
        )
