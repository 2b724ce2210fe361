"""The data of one code-host listing and the checks every host shares: the next page to ask
for, the state of a scan, the owner's and the count's checks, and the sentences a failed page
or a short listing ends a scope with. No I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx

from enum_pipeline.sources.http import PageError

#: What ``identity["principal"]`` holds for requests sent without a token.
ANONYMOUS = "anonymous"


def check_owner(owner: str, owner_type: str, host_name: str) -> tuple[str, str]:
    """``(owner, "org" | "user")`` from config values, or ValueError naming what is wrong."""
    owner = (owner or "").strip()
    if not owner or "/" in owner:
        raise ValueError(f"invalid {host_name} owner {owner!r}")
    if owner_type not in ("org", "user"):
        raise ValueError(f"owner_type must be 'org' or 'user', not {owner_type!r}")
    return owner, owner_type


class HttpOptions(TypedDict, total=False):
    """How a code-host source's HTTP client is built and retries, and the listing's name and
    topic filters (keywords every host takes; see ``sources.filters``)."""

    client: httpx.Client | None
    max_retries: int
    max_wait_seconds: float
    request_deadline_seconds: float
    sleep: Callable[[float], None]
    include: Sequence[str] | None
    exclude: Sequence[str] | None
    topics: Sequence[str] | None


class ListingError(Exception):
    """The listing cannot be trusted to be whole (its message is the verdict's reason)."""


@dataclass(frozen=True)
class PageRequest:
    """The next listing page to ask for."""

    url: str
    params: dict[str, Any] | None = None
    items_key: str | None = None  # the page is an object holding its items under this key

    def full_url(self) -> str:
        """The URL with its query, as the client sends it (to detect pagination loops)."""
        return str(httpx.URL(self.url, params=self.params) if self.params else httpx.URL(self.url))


@dataclass
class Listing:
    """The state of one scan, shared by the skeleton and the host's hooks."""

    headers: dict[str, str]
    token: str | None
    seen_ids: set[str] = field(default_factory=set)
    visited: set[str] = field(default_factory=set)
    pages: int = 0
    yielded: int = 0
    malformed: int = 0
    page_new: int = 0  # new records on the last page read
    page_malformed: int = 0
    visibilities: Counter[str] = field(default_factory=Counter)  # of every repository listed
    extra: dict[str, Any] = field(default_factory=dict)  # the host's own state

    @property
    def principal(self) -> str:
        """Whom the requests are authenticated as (set by ``_identify``)."""
        return str(self.extra.get("principal", ANONYMOUS))


def count_check(noun: str, listed: int, totals: set[int], header: str) -> str | None:
    """Compare a listing with the counts the host reported on its pages (``header``)."""
    if not totals:
        return (
            f"the host reported no {header}: nothing to check the listing against, its end is "
            "known only from the last page"
        )
    if len(totals) > 1:
        return (
            f"the {noun} count changed during the listing ({header} {sorted(totals)}): pages "
            f"may have skipped {noun}"
        )
    total = next(iter(totals))
    if listed != total:
        return f"server reported {header}={total} {noun} but {listed} were read"
    return None


def describe_page_error(error: PageError, *, what: str, first_page: bool) -> str:
    """A verdict reason for a page that failed: the page URL (redacted) and the error."""
    hint = ""
    if error.status == 404 and first_page:
        hint = f"{what} not found (or not visible with these credentials); "
    elif error.status in (401, 403):
        hint = "authentication or authorization failed; "
    return f"{hint}page {error.url} failed: {error.reason}"
