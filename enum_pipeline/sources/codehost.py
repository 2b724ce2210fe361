"""The listing skeleton every code-host source (GitHub, GitLab, Gitea) runs.

The base owns the scan: the owner and the scope key, the token (read from the environment when a
scan starts, never logged), the page loop, deduplication, malformed records, the identity (whom
the token belongs to and the owner's stable id), the mapping of every error to the verdict, and
closing the HTTP client. A host supplies only its pagination (``_first_page``, ``_next_page``),
where its owner and its token's user are read (``_owner_info``, ``user_path``), its record
mapping (``_record``, on ``sources.repos``) and its completeness check (``_check_complete``).

A listing is complete only when every page was read *and* the host's own count agrees with what
was listed; a listing whose end is known only from a missing next link is incomplete. A
configured ``token_env`` whose variable is missing or empty, or a token the host rejects, makes
the scope incomplete: a public-only listing must never pass for a complete read of an owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict
from enum_pipeline.sources.coverage import outside_listing
from enum_pipeline.sources.filters import ListingFilter
from enum_pipeline.sources.http import (
    DEFAULT_REQUEST_DEADLINE,
    USER_AGENT,
    HttpClient,
    Page,
    PageError,
    is_env_name,
    parse_link_header,
    read_token,
    same_origin,
    web_host,
)
from enum_pipeline.sources.listing import (
    ANONYMOUS,
    Listing,
    ListingError,
    PageRequest,
    describe_page_error,
)
from enum_pipeline.sources.remotes import redact_url
from enum_pipeline.sources.witness import Absence, Candidate, Confirmation, now, unknown


class CodeHostSource:
    """Base of the code-host sources; a subclass sets ``kind``, ``log``, ``user_path`` and
    implements the hooks below.

    ``owner`` is the owner as configured (a login, a group path) and ``owner_type`` what it is
    (``org``, ``user``, ``group``); the scope key is ``<kind>:<web host>/<owner, lower-cased>``.
    """

    kind: str
    log: logging.Logger
    accept = "application/json"
    noun = "repositories"
    #: ``GET`` path (below ``base_url``) and field of whom the token belongs to.
    user_path: str
    user_field = "login"
    include_forks = True
    include_archived = True
    #: The kind's facts: the columns it fills (set per host), what a listing could not have
    #: seen, and where one repository is fetched by its stable id (to confirm an absence).
    filled_columns: frozenset[str]
    coverage_rule = staticmethod(outside_listing)
    repo_by_id_path: str  # e.g. "/repositories/{id}", below base_url

    def __init__(
        self,
        owner: str,
        owner_type: str,
        base_url: str,
        token_env: str | None,
        *,
        client: httpx.Client | None = None,
        max_retries: int = 5,
        max_wait_seconds: float = 300,
        request_deadline_seconds: float = DEFAULT_REQUEST_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        topics: Sequence[str] | None = None,
        reserve_requests: int = 0,
    ) -> None:
        self.listing_filter = ListingFilter.of(include=include, exclude=exclude, topics=topics)
        if urlsplit(base_url or "").scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, not {redact_url(base_url)!r}")
        if token_env is not None and not is_env_name(token_env):
            # never echo it: a value that is not a variable name may be the token itself
            raise ValueError("token_env must name an environment variable (e.g. GITHUB_TOKEN)")
        self.owner = owner
        self.owner_type = owner_type
        self.base_url = base_url.rstrip("/")
        self.token_env = token_env
        self.host = self._web_host(self.base_url)
        self.scope_key = f"{self.kind}:{self.host}/{owner.lower()}"
        self._http = HttpClient(
            client=client,
            max_retries=max_retries,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
            logger=self.log,
            request_deadline=request_deadline_seconds,
            reserve_requests=reserve_requests,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(owner={self.owner!r}, owner_type={self.owner_type!r}, "
            f"base_url={redact_url(self.base_url)!r})"
        )

    @property
    def owner_label(self) -> str:
        """The owner as messages name it, e.g. ``org 'Acme'``."""
        return f"{self.owner_type} {self.owner!r}"

    # -- what a host supplies -------------------------------------------------------------

    def _web_host(self, base_url: str) -> str:
        """The host the scope key and project keys name."""
        return web_host(base_url)

    def auth_header(self, token: str) -> tuple[str, str]:  # pragma: no cover - per host
        """The header that carries ``token`` on this host."""
        raise NotImplementedError

    def _owner_info(self, listing: Listing) -> dict[str, Any]:  # pragma: no cover - per host
        """The owner's object (it must carry the owner's stable ``id``); called once the
        principal is known (``listing.principal``)."""
        raise NotImplementedError

    def _first_page(self, listing: Listing) -> PageRequest:  # pragma: no cover - per host
        raise NotImplementedError

    def _next_page(
        self, page: Page, request: PageRequest, listing: Listing
    ) -> PageRequest | None:  # pragma: no cover - per host
        """The page after ``page``, None at the end, or ListingError."""
        raise NotImplementedError

    def _item_id(self, item: Any) -> str | None:
        """The stable id of a listed item, or None when it is malformed."""
        if not isinstance(item, dict) or item.get("id") is None or not item.get("name"):
            return None
        return str(item["id"])

    def _visibility(self, item: dict[str, Any]) -> str:
        """``public``, ``internal`` or ``private``."""
        if item.get("visibility"):
            return str(item["visibility"]).lower()
        return "private" if item.get("private") else "public"

    def _wanted(self, item: dict[str, Any]) -> bool:
        """False for an item the configured filters drop."""
        if (item.get("archived") and not self.include_archived) or (
            item.get("fork") and not self.include_forks
        ):
            return False
        topics = item.get("topics") if isinstance(item.get("topics"), list) else None
        return self.listing_filter.why_excluded(self._item_path(item), topics) is None

    def _item_path(self, item: dict[str, Any]) -> str | None:
        """The listed item's path below its owner (what name filters match)."""
        return str(item["name"])

    def _record(self, item: dict[str, Any]) -> ProjectRecord:  # pragma: no cover - per host
        raise NotImplementedError

    def _check_complete(self, listing: Listing) -> str | None:  # pragma: no cover - per host
        """Why the listing, read to its end, is still not provably whole; or None."""
        raise NotImplementedError

    def _before_request(self, listing: Listing) -> None:
        """Called before every request of a listing or a look-up (e.g. to renew a token)."""

    def _coverage(self, listing: Listing) -> dict[str, Any]:
        """What the listing could see."""
        coverage = {
            "visibilities": self._visibilities(listing),
            "include_forks": self.include_forks,
            "include_archived": self.include_archived,
        }
        if self.listing_filter:
            coverage["filters"] = self.listing_filter.as_coverage()
        return coverage

    def _visibilities(self, listing: Listing) -> list[str]:
        """The visibilities the listing returns: public only without a token."""
        if listing.token is None:
            return ["public"]
        return ["internal", "private", "public"]

    # -- the skeleton ---------------------------------------------------------------------

    def scope_keys(self) -> list[str]:
        """The one scope this source reads."""
        return [self.scope_key]

    def scan(self) -> Iterator[ScanItem]:
        """Yield the owner's repositories, then one verdict for the owner's scope."""
        identity: dict[str, Any] = {"host": self.host, "owner": self.owner}
        listing, failure = self._start()
        try:
            if failure is None:
                failure = yield from self._list(listing, identity)
        except PageError as exc:
            failure = self._describe(exc, listing)
        except ListingError as exc:
            failure = str(exc)
        finally:
            self._http.close()
        yield ScopeVerdict(
            scope_key=self.scope_key,
            source_kind=self.kind,
            complete=failure is None,
            seen=listing.yielded,
            reason=failure,
            identity=identity,
            coverage=self._coverage(listing),
            budget={**self._http.budget.as_dict(), "pages": listing.pages},
        )

    def _start(self) -> tuple[Listing, str | None]:
        """Read the token (kept out of every log and error) and build the request headers."""
        token = read_token(self.token_env)
        self._http.set_secrets([token])
        headers = {"Accept": self.accept, "User-Agent": USER_AGENT}
        if token:
            name, value = self.auth_header(token)
            headers[name] = value
        listing = Listing(headers=headers, token=token)
        if self.token_env and not token:
            return listing, (
                f"environment variable {self.token_env} (token_env) is not set or empty: a "
                f"listing without it shows public {self.noun} only and cannot stand for "
                f"{self.owner_label}; set it, or set token_env to null for an anonymous read"
            )
        return listing, None

    def _list(
        self, listing: Listing, identity: dict[str, Any]
    ) -> Generator[ProjectRecord, None, str | None]:
        """Identify, read every page, then check the listing; returns why it is not whole."""
        identity.update(self._identify(listing))
        request: PageRequest | None = self._first_page(listing)
        while request is not None:
            self._before_request(listing)
            page = self._http.get_json(
                request.url,
                params=request.params,
                headers=listing.headers,
                expect=dict if request.items_key else list,
            )
            listing.pages += 1
            listing.visited.add(page.url)
            listing.page_new = listing.page_malformed = 0
            items = page.data.get(request.items_key) if request.items_key else page.data
            if not isinstance(items, list):
                raise ListingError(
                    f"page {self._http.safe_url(page.url)} holds no {request.items_key!r} list"
                )
            for item in items:
                record = self._accept(item, listing)
                if record is not None:
                    yield record
            request = self._next_page(page, request, listing)
            if request is not None and request.full_url() in listing.visited:
                shown = self._http.safe_url(request.full_url())
                raise ListingError(f"pagination loop: next page {shown} seen before")
        if listing.malformed:
            return f"{listing.malformed} {self.noun} without an id or name in the listing"
        return self._check_complete(listing)

    def _accept(self, item: Any, listing: Listing) -> ProjectRecord | None:
        """The record of one listed item, or None (malformed, seen already, filtered out)."""
        key = self._item_id(item)
        if key is None:
            listing.malformed += 1
            listing.page_malformed += 1
            return None
        if key in listing.seen_ids:
            return None  # the list shifted between pages: already yielded
        listing.seen_ids.add(key)
        listing.page_new += 1
        listing.visibilities[self._visibility(item)] += 1
        if not self._wanted(item):
            return None
        listing.yielded += 1
        return self._record(item)

    def _identify(self, listing: Listing) -> dict[str, Any]:
        """Whom the token belongs to, then the owner's stable id."""
        principal = self._get_user(listing)
        listing.extra["principal"] = principal
        owner = self._owner_info(listing)
        if owner.get("id") is None:
            raise ListingError(f"the answer for {self.owner_label} carries no id")
        return {"owner_id": owner["id"], "principal": principal}

    def _describe(self, exc: PageError, listing: Listing) -> str:
        """The verdict reason for a page that failed."""
        if exc.status == 401 and listing.token:
            return (
                f"the token in environment variable {self.token_env} was rejected (HTTP 401 "
                f"at {exc.url}): {exc.reason}"
            )
        return describe_page_error(exc, what=self.owner_label, first_page=listing.pages == 0)

    def _get_user(self, listing: Listing) -> str:
        """Whom the token belongs to (``GET`` ``user_path``), or ``anonymous`` without a token."""
        if not listing.token:
            return ANONYMOUS
        path = self.user_path
        me = self._http.get_json(f"{self.base_url}{path}", headers=listing.headers, expect=dict)
        login = me.data.get(self.user_field)
        if not login:
            raise ListingError(
                f"{path} does not say whom the token belongs to: the principal is unknown"
            )
        return str(login)

    # -- the second witness ----------------------------------------------------------------

    def confirm_absence(self, candidates: Sequence[Candidate]) -> Iterator[Confirmation]:
        """Fetch each candidate by its stable id, after proving the principal the run read as
        can still see the owner (same principal, same owner id) and its private repositories.

        404 confirms the repository gone; a found one is ``present`` with its fresh facts
        (``updates``) and, when it left the owner, why it is outside the scope; any other
        answer, an anonymous read (which cannot tell a deleted repository from one made
        private) or a changed principal keeps it.
        """
        listing, failure = self._start()
        try:
            why = failure or self._witness_refusal(listing, candidates[0].identity)
            if why:
                yield from (unknown(c, why) for c in candidates)
                return
            for candidate in candidates:
                yield self._look_up(candidate, listing)
        finally:
            self._http.close()

    def _witness_refusal(self, listing: Listing, reading: dict[str, Any]) -> str | None:
        """Why a 404 from this principal now would not confirm an absence; None when it would."""
        if listing.token is None:
            return (
                f"an anonymous read cannot tell a deleted repository from one made private, "
                f"so a not-found answer confirms nothing; set token_env to a token that can "
                f"see the private {self.noun} of {self.owner_label} to confirm absences"
            )
        try:
            principal = self._get_user(listing)
            listing.extra["principal"] = principal
            if principal != reading.get("principal"):
                return (
                    f"requests are now authenticated as {principal!r}, the run read "
                    f"{self.owner_label} as {reading.get('principal')!r}: not the same witness"
                )
            owner = self._owner_info(listing)
        except (PageError, ListingError) as exc:
            return f"cannot prove the principal sees {self.owner_label}: {exc}"
        if str(owner.get("id")) != str(reading.get("owner_id")):
            return (
                f"{self.owner_label} now has id {owner.get('id')}, the run read id "
                f"{reading.get('owner_id')}: not the owner the run read"
            )
        if "private" not in self._visibilities(listing):
            return (
                f"the token cannot see the private {self.noun} of {self.owner_label}: a "
                "not-found answer may be a repository made private"
            )
        return None

    def _look_up(self, candidate: Candidate, listing: Listing) -> Confirmation:
        """``GET`` one repository by its stable id."""
        rid = str(candidate.attributes.get("id") or candidate.project_key.rsplit(":", 1)[-1])
        path = self.repo_by_id_path.format(id=quote(rid, safe=""), owner=quote(self.owner, safe=""))
        url = f"{self.base_url}{path}"
        shown = self._http.safe_url(url)
        try:
            self._before_request(listing)
            page = self._http.get_json(url, headers=listing.headers, expect=dict)
        except PageError as exc:
            checked = now()
            if exc.status == 404:
                return Confirmation(
                    candidate.project_key,
                    Absence.GONE,
                    f"not found: GET {shown} at {checked:%Y-%m-%dT%H:%M:%SZ} as "
                    f"{listing.principal}, who sees {self.owner_label} and its private "
                    f"{self.noun}",
                    checked,
                )
            return unknown(candidate, f"GET {shown}: {exc.reason}")
        item = page.data
        if self._item_id(item) != rid:
            return unknown(candidate, f"GET {shown} answered for id {item.get('id')!r}")
        record = self._record(item)
        updates = {
            "name": record.name,
            "location": record.location,
            "archived": record.archived,
            "fork": record.fork,
            "visibility": record.visibility,
        }
        outside = None
        if not record.location.lower().startswith(self.owner.lower() + "/"):
            outside = f"moved out of {self.owner_label}: now {record.location}"
        checked = now()
        facts = ", ".join(f"{k}={v}" for k, v in updates.items() if k != "name")
        return Confirmation(
            candidate.project_key,
            Absence.PRESENT,
            f"found: GET {shown} at {checked:%Y-%m-%dT%H:%M:%SZ} ({facts})",
            checked,
            updates=updates,
            outside=outside,
        )

    def _next_link(self, page: Page) -> PageRequest | None:
        """The ``Link: rel="next"`` page, checked to stay on the configured origin."""
        nxt = parse_link_header(page.headers.get("link"), base=page.url).get("next")
        if nxt is None:
            return None
        if not same_origin(nxt, self.base_url):
            raise ListingError(
                f"page {self._http.safe_url(page.url)}: next link points to another origin "
                f"({self._http.safe_url(nxt)}); not followed with credentials"
            )
        return PageRequest(nxt)
