"""Which inventory columns each source kind fills (the rest stay NULL: never a guess).

Reports and the README read ``FILLED_COLUMNS`` to tell "this source does not know" from "the
value is empty". Columns every kind fills (``project_key``, ``name``, ``location``, ``scope_key``,
``source_kind``) are not listed.
"""

from __future__ import annotations

#: What a checkout's .git files say about its working copy (only the filesystem source knows).
_CHECKOUT_COLUMNS = (
    "current_branch",
    "remotes",
    "upstream",
    "in_sync",
    "shallow",
    "has_stash",
    "last_fetch_at",
)

#: The product columns, in the order reports and ``enum-pipeline projects`` show them.
PRODUCT_COLUMNS: tuple[str, ...] = (
    "archived",
    "fork",
    "visibility",
    "description",
    "topics",
    "language",
    "license",
    "stars",
    "created_at",
    "last_activity_at",
    "default_branch",
    *_CHECKOUT_COLUMNS,
)

#: What every code host fills; a host's source class adds its own (``filled_columns``).
CODE_HOST_COMMON = frozenset(
    {
        "vcs",
        "remote_url",
        "normalized_remote",
        "default_branch",
        "archived",
        "fork",
        "visibility",
        "description",
        "topics",
        "stars",
        "created_at",
        "last_activity_at",
    }
)

#: A checkout: what its .git files and its folder say (no code-host facts).
CHECKOUT_FILLED = frozenset(
    {
        "vcs",
        "path",
        "remote_url",
        "normalized_remote",
        "default_branch",  # git: refs/remotes/<remote>/HEAD when present; bare: HEAD
        "head_commit",
        "last_commit_at",
        "last_activity_at",  # the HEAD commit's committer time
        "markers",
        *_CHECKOUT_COLUMNS,
    }
)
