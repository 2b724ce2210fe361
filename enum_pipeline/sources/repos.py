"""Turning a GitHub-shaped repository object (GitHub, Gitea/Forgejo) into a ProjectRecord."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.http import parse_timestamp
from enum_pipeline.sources.remotes import normalize_remote, redact_url


def repo_attributes(repo: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The attributes GitHub and Gitea share, URLs redacted, plus the host-specific ``extra``.

    What has a column of its own (archived, fork, visibility, topics, …) is not repeated here.
    """
    html_url = repo.get("html_url") or None
    return {
        "id": repo.get("id"),
        "full_name": repo.get("full_name"),
        "html_url": redact_url(html_url) if html_url else None,
        "ssh_url": redact_url(repo["ssh_url"]) if repo.get("ssh_url") else None,
        "size": repo.get("size"),
        "updated_at": repo.get("updated_at"),
        **extra,
    }


def text_or_none(value: Any) -> str | None:
    """A non-empty string, or None (APIs send ``""`` or ``null`` for "not set")."""
    return value if isinstance(value, str) and value else None


def int_or_none(value: Any) -> int | None:
    """An int (never a bool), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bool_or_none(value: Any) -> bool | None:
    """A bool, or None when the API did not send one."""
    return value if isinstance(value, bool) else None


def topics_or_none(value: Any) -> tuple[str, ...] | None:
    """A list of topic strings as a tuple; None when the API sent no list."""
    if not isinstance(value, list):
        return None
    return tuple(str(t) for t in value if isinstance(t, str | int))


def repo_record(
    *,
    kind: str,
    host: str,
    scope_key: str,
    owner: str,
    repo: dict[str, Any],
    attributes: dict[str, Any],
    visibility: str | None,
    last_commit_at: datetime | None = None,
    license: str | None = None,
    stars: int | None = None,
    last_activity_at: datetime | None = None,
) -> ProjectRecord:
    """The record of one repository; identity is ``kind:host:numeric id`` (renames keep it)."""
    clone_url = repo.get("clone_url") or None
    html_url = repo.get("html_url") or None
    name = str(repo["name"])
    return ProjectRecord(
        project_key=f"{kind}:{host}:{repo['id']}",
        scope_key=scope_key,
        source_kind=kind,
        name=name,
        location=str(repo.get("full_name") or f"{owner}/{name}"),
        vcs="git",
        remote_url=redact_url(clone_url) if clone_url else None,
        normalized_remote=normalize_remote(html_url or clone_url or ""),
        default_branch=repo.get("default_branch") or None,
        last_commit_at=last_commit_at,
        attributes=attributes,
        archived=bool_or_none(repo.get("archived")),
        fork=bool_or_none(repo.get("fork")),
        visibility=visibility,
        description=text_or_none(repo.get("description")),
        topics=topics_or_none(repo.get("topics")),
        language=text_or_none(repo.get("language")),
        license=license,
        stars=stars,
        created_at=parse_timestamp(repo.get("created_at")),
        last_activity_at=last_activity_at,
    )
