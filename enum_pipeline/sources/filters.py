"""Scan-time filters of a code-host listing: name patterns, topics, GitLab sub-groups left out.

One predicate answers for both sides of a run: the source asks it of each listed repository
(what to yield), and the cleanup's coverage rule asks it of each row the run did not see (was
it *filtered out* rather than missed?). The filters a listing applied travel in its verdict's
coverage, so a row a filter excludes is kept as out of coverage, never removed, and narrowing
or widening a filter between runs loses nothing. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any


@dataclass(frozen=True)
class ListingFilter:
    """Which repositories of an owner a listing keeps.

    Patterns are shell-style (``*``, ``?``, ``[ab]``), matched case-insensitively against the
    repository's path below its owner (``api``; ``team/api`` in a GitLab sub-group).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()  # keep a repository carrying any of these
    exclude_subgroups: tuple[str, ...] = ()  # GitLab: paths below the group, with descendants

    @classmethod
    def of(cls, **values: Iterable[str] | None) -> ListingFilter:
        """A filter from configuration values (None: not set)."""
        return cls(**{k: tuple(str(v).strip("/") for v in (vs or ())) for k, vs in values.items()})

    @classmethod
    def from_coverage(cls, data: Mapping[str, Any] | None) -> ListingFilter:
        """The filter a verdict's coverage recorded (``as_coverage``)."""
        data = data or {}
        return cls.of(**{k: data.get(k) for k in ("include", "exclude", "topics")}).with_subgroups(
            data.get("exclude_subgroups")
        )

    def with_subgroups(self, subgroups: Iterable[str] | None) -> ListingFilter:
        """This filter leaving out these GitLab sub-groups too."""
        paths = tuple(str(s).strip("/").lower() for s in (subgroups or ()) if str(s).strip("/"))
        return ListingFilter(self.include, self.exclude, self.topics, paths)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude or self.topics or self.exclude_subgroups)

    def as_coverage(self) -> dict[str, list[str]]:
        """The filter as a verdict's coverage records it (set keys only)."""
        return {
            k: list(getattr(self, k))
            for k in ("include", "exclude", "topics", "exclude_subgroups")
            if getattr(self, k)
        }

    def why_excluded(self, path: str | None, topics: Iterable[str] | None) -> str | None:
        """Why the filter leaves out the repository at ``path`` (below its owner) with these
        ``topics``; None when it keeps it. An unknown path or topics count as left out."""
        if not self:
            return None
        if path is None:
            return "outside its owner's paths: the listing's filters cannot tell it was listed"
        lowered = path.lower()
        for sub in self.exclude_subgroups:
            if lowered.startswith(sub + "/"):
                return f"in sub-group {sub!r}, which exclude_subgroups leaves out"
        if self.include and not any(fnmatchcase(lowered, p.lower()) for p in self.include):
            return f"{path!r} matches no include pattern {list(self.include)}"
        hit = next((p for p in self.exclude if fnmatchcase(lowered, p.lower())), None)
        if hit is not None:
            return f"{path!r} matches exclude pattern {hit!r}"
        if self.topics:
            have = {str(t).lower() for t in (topics or ())}
            if not have & {t.lower() for t in self.topics}:
                return f"carries none of the topics {list(self.topics)} the listing keeps"
        return None


def path_below(owner: str, location: str | None) -> str | None:
    """``location`` (``owner/…``) as a path below ``owner``, or None when it is not below it."""
    prefix = owner.strip("/").lower() + "/"
    if not location or not location.lower().startswith(prefix):
        return None
    return location[len(prefix) :]
