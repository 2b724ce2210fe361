"""Read git metadata straight from files: no ``git`` process, no dulwich ``Repo`` on the hot path.

``read_git_meta`` reads ``HEAD``, one ref (loose file, else ``packed-refs``), ``config`` (for the
remotes and the branch's upstream) and the HEAD commit object (for its committer time); then the
cheap state of a checkout, each one file lookup and never an index walk: the remote's ``HEAD``
(its default branch), the upstream ref (in sync or not), ``shallow``, ``refs/stash`` and the
``FETCH_HEAD`` time. Nothing here raises on malformed input: every problem is collected in
``GitMeta.errors`` and whatever could be read is returned.

This module is the entry point; the reading is done by its parts, whose names it re-exports:

* ``gitfiles``: bounded reads of regular files (``open_regular``, ``read_small``,
  ``RefusedFile``, the ``MAX_*`` bounds), ``GitMetaError`` and the text helpers;
* ``gitrefs``: the git dir, ``HEAD``, loose and packed refs, upstream and the checkout's state;
* ``gitconfig``: the one git-config reader (``parse_git_config``), remotes and upstream;
* ``gitobjects``: the HEAD commit's committer time (loose, packed, dulwich fallback).
"""

from __future__ import annotations

from enum_pipeline.sources.gitconfig import (  # noqa: F401 - re-exported
    branch_upstream,
    parse_git_config,
    pick_remote,
    remote_urls,
    remotes_and_upstream,
)
from enum_pipeline.sources.gitfiles import (  # noqa: F401 - re-exported
    MAX_CONFIG_FILE,
    MAX_LOOSE_OBJECT,
    MAX_PACKED_REFS,
    MAX_SMALL_FILE,
    GitMeta,
    GitMetaError,
    RefusedFile,
    _err,
    decode_text,
    open_regular,
    read_small,
    safe_str,
)
from enum_pipeline.sources.gitobjects import (  # noqa: F401 - re-exported (tests patch these)
    _IDX_READ_WHOLE,
    _NeedFallback,
    _packed_commit_time,
    commit_time,
)
from enum_pipeline.sources.gitrefs import (  # noqa: F401 - re-exported
    PackedRefs,
    _checkout_state,
    _read_head,
    read_packed_ref,
    read_ref,
    read_symref,
    resolve_git_dir,
)
from enum_pipeline.sources.remotes import redact_url


def read_git_meta(
    dotgit: str,
    *,
    is_dir: bool | None = None,
    bare: bool = False,
) -> GitMeta:
    """Read HEAD, branch, head commit, remotes, last commit time and a checkout's cheap state.

    ``dotgit`` is the ``.git`` entry of a work tree (directory or ``gitdir:`` file), or the
    repository folder itself when ``bare``. Never raises: problems are listed in ``errors``.
    """
    meta = GitMeta(bare=bare)
    if bare or is_dir:
        git_dir = common_dir = dotgit
    else:
        try:
            git_dir, common_dir, meta.worktree = resolve_git_dir(dotgit, is_dir)
        except (OSError, GitMetaError, ValueError) as exc:
            meta.errors.append(f"gitdir: {_err(exc)}")
            return meta
    meta.git_dir = git_dir
    meta.common_dir = common_dir
    packed = PackedRefs(common_dir)
    sha = meta.head_commit = _read_head(meta, git_dir, common_dir, packed)
    head = meta.head_ref
    branch = head[11:] if not bare and head is not None and head.startswith("refs/heads/") else None
    up = _read_remote(meta, common_dir, branch)
    if not bare:
        _checkout_state(meta, git_dir, common_dir, up, sha, packed)
    if sha is not None:
        try:
            meta.last_commit_at = commit_time(common_dir + "/objects", sha)
            if meta.last_commit_at is None:
                meta.errors.append(f"HEAD commit {sha} not found in the object store")
        except Exception as exc:  # corrupt objects must never abort a scan
            meta.errors.append(f"HEAD commit: {_err(exc)}")
    return meta


def _read_remote(meta: GitMeta, common_dir: str, branch: str | None) -> tuple[str, str] | None:
    """The remotes (redacted) and the one the repository was most likely cloned from; returns
    ``branch``'s upstream ``(remote, merge)`` from the same config read (None: none, or no
    ``branch``)."""
    up = None
    try:
        config = read_small(common_dir + "/config", MAX_CONFIG_FILE)
        urls, up = remotes_and_upstream(config, branch)
        picked = pick_remote(urls)
        if picked is not None:  # each url (and name: any git value may be a url) redacted once
            meta.remotes = {redact_url(name): redact_url(url) for name, url in urls.items()}
            meta.remote_name = picked[0]
            meta.remote_url = redact_url(picked[1])
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        meta.errors.append(f"config: {_err(exc)}")
    return up
