"""Where and under which queue limits a scope's run goes: the run tags of one scope.

One function answers it for the schedule, backfills, the CLI and the deployment docs:
``scope_run_tags``. The run queue limits runs per unique value of ``SCOPE_TAG`` (one at a
time) and of ``HOST_TOKEN_TAG`` (a code host and the token it is read with).
"""

from __future__ import annotations

import hashlib

from enum_pipeline.defs.constants import HOST_TOKEN_TAG, SCOPE_TAG
from enum_pipeline.sources.base import Source


def _tag_value(text: str) -> str:
    """A run-tag value for ``text``: short, and the same for the same text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def host_token_value(source: Source) -> str:
    """The queue value a source's runs share: its host and token variable, or this machine."""
    host = getattr(source, "host", None)
    if host is None:
        return "local"
    return f"{source.kind}:{host}:{getattr(source, 'token_env', None) or 'anonymous'}"


def scope_run_tags(source: Source, scope_key: str) -> dict[str, str]:
    """The run tags of a run of ``scope_key`` (read by ``source``): its queue limits."""
    return {SCOPE_TAG: _tag_value(scope_key), HOST_TOKEN_TAG: host_token_value(source)}
