"""Could a read have seen a row? The coverage predicate the store asks before removing one.

A ``ScopeVerdict.coverage`` says what a read could see: the walk settings of a filesystem root,
the visibilities and filters of a code-host listing. A stale row of a complete scope that the
coverage excludes was not *missed*, it was *not looked for* (``skip_names`` gained its folder,
the token that saw private repositories is gone): it is out of coverage, kept and listed with the
reason :func:`outside_coverage` gives, never a cleanup candidate. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from enum_pipeline.sources.filters import ListingFilter, path_below

__all__ = ["COVERAGE_RULES", "outside_coverage", "outside_listing", "outside_walk"]


def outside_coverage(
    source_kind: str,
    coverage: Mapping[str, Any] | None,
    row: Mapping[str, Any],
    scope_locations: Collection[str],
) -> str | None:
    """Why a read with ``coverage`` could not have seen ``row``, or None when it could have.

    ``row`` is a projects row as a mapping (``location``, ``scope_key``, ``attributes``, and the
    ``archived`` / ``fork`` / ``visibility`` columns where they exist); ``scope_locations`` holds
    every location of the scope's rows (to tell a nested checkout when ``nested`` is False).
    An empty coverage (a reading recorded before coverage was) answers None. A kind without
    coverage rules could not have seen anything it did not list (default deny).
    """
    if not coverage:
        return None
    rule = COVERAGE_RULES.get(source_kind)
    if rule is None:
        return f"source kind {source_kind!r} has no coverage rules: what it did not list is kept"
    return rule(coverage, row, scope_locations)


# -- filesystem -----------------------------------------------------------------------------


def _relative_parts(row: Mapping[str, Any]) -> list[str] | None:
    """The folder names from the scope's root down to the row's location, or None."""
    location = str(row.get("location") or "")
    scope_key = str(row.get("scope_key") or "")
    root = scope_key[len("fs:") :] if scope_key.startswith("fs:") else ""
    if not location or not root:
        return None
    if location == root:
        return []
    prefix = root.rstrip("/") + "/"
    if not location.startswith(prefix):
        return None
    return [p for p in location[len(prefix) :].split("/") if p]


def outside_walk(
    coverage: Mapping[str, Any], row: Mapping[str, Any], scope_locations: Collection[str]
) -> str | None:
    """The filesystem rule: skipped folder names, ``max_depth``, ``nested``."""
    parts = _relative_parts(row)
    if parts is None:
        return None
    skip = set(coverage.get("skip_names") or ())
    # the project folder itself was never listed if its name is skipped, nor was any ancestor
    for name in parts:
        if name in skip:
            return f"skip_names holds {name!r}: the walk does not enter it"
    max_depth = coverage.get("max_depth")
    if isinstance(max_depth, int) and len(parts) > max_depth:
        return f"depth {len(parts)} is beyond max_depth {max_depth}"
    if coverage.get("nested") is False:
        location = str(row["location"])
        for other in scope_locations:
            if other != location and location.startswith(other.rstrip("/") + "/"):
                return f"nested in {other}, and nested is false: the walk stops at a project"
    return None


# -- code hosts -----------------------------------------------------------------------------


def _attributes(row: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = row.get("attributes")
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except ValueError:
            return {}
    return attrs if isinstance(attrs, Mapping) else {}


def _flag(row: Mapping[str, Any], name: str) -> bool:
    value = row.get(name)
    if value is None:
        value = _attributes(row).get(name)
    return bool(value)


def _visibility(row: Mapping[str, Any]) -> str | None:
    value = row.get("visibility")
    attrs = _attributes(row)
    if not value:
        value = attrs.get("visibility")
    if not value and attrs.get("private") is not None:
        value = "private" if attrs.get("private") else "public"
    return str(value).lower() if value else None


def outside_listing(
    coverage: Mapping[str, Any], row: Mapping[str, Any], scope_locations: Collection[str] = ()
) -> str | None:
    """The code-host rule: visibilities, forks, archived, subgroups the listing returned, and
    an App installation granted selected repositories only."""
    if coverage.get("repository_selection") == "selected":
        return (
            "the GitHub App installation sees selected repositories only: one it did not list "
            "may not be granted to it"
        )
    visibilities = coverage.get("visibilities")
    if visibilities is not None:
        seen = sorted(str(v).lower() for v in visibilities)
        visibility = _visibility(row)
        if visibility is None and "private" not in seen:
            return f"visibility unknown; the listing returned {seen} only"
        if visibility is not None and visibility not in seen:
            return f"visibility {visibility!r}; the listing returned {seen} only"
    if coverage.get("include_forks") is False and _flag(row, "fork"):
        return "a fork; the listing excluded forks (include_forks is false)"
    if coverage.get("include_archived") is False and _flag(row, "archived"):
        return "archived; the listing excluded archived repositories (include_archived is false)"
    if coverage.get("include_subgroups") is False and (why := _outside_group(row)):
        return why
    if coverage.get("filters"):
        scope_key = str(row.get("scope_key") or "")
        owner = scope_key.split("/", 1)[1] if "/" in scope_key else ""
        path = path_below(owner, str(row.get("location") or "")) if owner else None
        return ListingFilter.from_coverage(coverage["filters"]).why_excluded(path, _topics(row))
    return None


def _topics(row: Mapping[str, Any]) -> list[str] | None:
    value = row.get("topics")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return [str(t) for t in value] if isinstance(value, list | tuple) else None


def _outside_group(row: Mapping[str, Any]) -> str | None:
    """A GitLab project in a subgroup, for a listing without subgroups."""
    scope_key = str(row.get("scope_key") or "")
    group = scope_key.split("/", 1)[1] if "/" in scope_key else ""
    location = str(row.get("location") or "").lower()
    if group and location.startswith(group + "/") and "/" in location[len(group) + 1 :]:
        return "in a subgroup; the listing excluded subgroups (include_subgroups is false)"
    return None


#: Each source kind's coverage rule (the source classes name theirs as ``coverage_rule``).
COVERAGE_RULES = {
    "filesystem": outside_walk,
    "github": outside_listing,
    "gitlab": outside_listing,
    "gitea": outside_listing,
}
