"""Turning a GitHub-shaped repository object (GitHub, Gitea/Forgejo) into a ProjectRecord."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.remotes import normalize_remote, redact_url


def repo_attributes(repo: dict[str, Any], visibility: str | None, **extra: Any) -> dict[str, Any]:
    """The attributes GitHub and Gitea share, URLs redacted, plus the host-specific ``extra``."""
    html_url = repo.get("html_url") or None
    topics = repo.get("topics")
    return {
        "id": repo.get("id"),
        "full_name": repo.get("full_name"),
        "html_url": redact_url(html_url) if html_url else None,
        "ssh_url": redact_url(repo["ssh_url"]) if repo.get("ssh_url") else None,
        "archived": bool(repo.get("archived", False)),
        "fork": bool(repo.get("fork", False)),
        "visibility": visibility,
        "topics": list(topics) if isinstance(topics, list) else [],
        "language": repo.get("language"),
        "size": repo.get("size"),
        "updated_at": repo.get("updated_at"),
        "description": repo.get("description"),
        **extra,
    }


def repo_record(
    *,
    kind: str,
    host: str,
    scope_key: str,
    owner: str,
    repo: dict[str, Any],
    attributes: dict[str, Any],
    last_commit_at: datetime | None = None,
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
    )
