"""What every source yields: project records, and one verdict for every scope it read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ProjectRecord:
    """One project as a source saw it.

    ``project_key`` is the stable identity (e.g. ``fs:/abs/path`` or ``github:github.com:12345``);
    ``scope_key`` names the scope that yielded it (a root folder, an organisation) and
    ``location`` is its place inside that scope (a path, a ``group/subgroup/name``), used to match
    protected sub-scopes.

    Every field after ``attributes`` is None when the source does not know it (``FILLED_COLUMNS``
    in ``sources/fields.py`` says which a source kind fills); a source never guesses one.
    ``default_branch`` is the branch the remote (or code host) names as its default;
    ``current_branch`` is what a checkout has checked out.
    """

    project_key: str
    scope_key: str
    source_kind: str
    name: str
    location: str
    vcs: str | None = None
    path: str | None = None
    remote_url: str | None = None
    normalized_remote: str | None = None
    default_branch: str | None = None
    head_commit: str | None = None
    last_commit_at: datetime | None = None
    markers: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    archived: bool | None = None
    fork: bool | None = None
    visibility: str | None = None
    description: str | None = None
    topics: tuple[str, ...] | None = None
    language: str | None = None
    license: str | None = None  # SPDX id
    stars: int | None = None
    created_at: datetime | None = None
    last_activity_at: datetime | None = None
    current_branch: str | None = None
    remotes: dict[str, str] | None = None  # name -> redacted url
    upstream: str | None = None
    in_sync: bool | None = None
    shallow: bool | None = None
    has_stash: bool | None = None
    last_fetch_at: datetime | None = None


@dataclass(frozen=True)
class ScopeVerdict:
    """How a source ended one scope, and what its read could and could not see.

    ``complete`` is True only when the source provably read the whole scope. An incomplete scope
    protects every project under it from cleanup; a complete scope may still list
    ``protected`` locations (sub-trees it did not enter: an unreadable folder, a foreign mount, a
    symlinked folder not followed) whose projects are kept, each with its reason in
    ``protected_reasons`` (``"unreadable: ..."``, ``"foreign mount"``, ...).

    ``identity`` says *which* thing was read (a root's real path and device; a code-host owner's
    stable id and the principal the requests were authenticated as), for a later run to compare.
    ``coverage`` says *what* the read could see (the walk settings; the visibilities a listing
    returns and its filters); ``sources.coverage.outside_coverage`` tells a row it excludes.
    """

    scope_key: str
    source_kind: str
    complete: bool
    seen: int = 0
    reason: str | None = None
    protected: tuple[str, ...] = ()
    identity: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)
    protected_reasons: dict[str, str] = field(default_factory=dict)
    #: What the read cost a code host (``sources.budget.RequestBudget.as_dict`` and pages).
    budget: dict[str, Any] = field(default_factory=dict)


ScanItem = ProjectRecord | ScopeVerdict


class Source(Protocol):
    """A source of projects. ``scan`` yields records and ends every scope with a verdict."""

    kind: str

    def scope_keys(self) -> list[str]:
        """The scopes this source will read, known before scanning starts."""
        ...

    def scan(self) -> Iterator[ScanItem]:
        """Yield every project found, and exactly one ``ScopeVerdict`` per scope key."""
        ...
