"""Turning a code host's repository object into a ProjectRecord: what every host maps alike
(``host_record``), and the GitHub-shaped object GitHub and Gitea/Forgejo share (``repo_record``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.remotes import normalize_remote, redact_url

if TYPE_CHECKING:
    from enum_pipeline.sources.codehost import CodeHostSource


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


def host_record(
    source: CodeHostSource,
    item: dict[str, Any],
    *,
    name: str,
    location: str,
    clone_url: str | None,
    web_url: str | None,
    **columns: Any,
) -> ProjectRecord:
    """The record of one repository on a code host; identity is ``kind:host:numeric id`` (renames
    keep it). The columns every host names alike (``default_branch``, ``archived``,
    ``description``, ``created_at``) are read here; ``columns`` holds the host's own."""
    return ProjectRecord(
        project_key=f"{source.kind}:{source.host}:{item['id']}",
        scope_key=source.scope_key,
        source_kind=source.kind,
        name=name,
        location=location,
        vcs="git",
        remote_url=redact_url(clone_url) if clone_url else None,
        normalized_remote=normalize_remote(web_url or clone_url or ""),
        default_branch=item.get("default_branch") or None,
        archived=bool_or_none(item.get("archived")),
        description=text_or_none(item.get("description")),
        created_at=parse_timestamp(item.get("created_at")),
        **columns,
    )


def repo_record(
    source: CodeHostSource, repo: dict[str, Any], *, extra: dict[str, Any], **columns: Any
) -> ProjectRecord:
    """The record of a GitHub-shaped repository object: ``extra`` are the host's own attributes
    (besides ``repo_attributes``), ``columns`` its own columns."""
    name = str(repo["name"])
    return host_record(
        source,
        repo,
        name=name,
        location=str(repo.get("full_name") or f"{source.owner}/{name}"),
        clone_url=repo.get("clone_url"),
        web_url=repo.get("html_url"),
        attributes=repo_attributes(repo, **extra),
        fork=bool_or_none(repo.get("fork")),
        topics=topics_or_none(repo.get("topics")),
        language=text_or_none(repo.get("language")),
        **columns,
    )


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO-8601 timestamp from an API (``...Z`` or with an offset) as an aware UTC datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
