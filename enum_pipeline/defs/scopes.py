"""The scope partitions: one dynamic partition key per configured scope, and the way back.

A scope key is its partition key, except for what Dagster's UI reads as syntax in a partition
selection (``...`` is a range, ``,`` separates keys, ``[`` ``]`` bracket a range) and control
characters: those are percent-encoded (``%`` too), so the mapping stays reversible and the
common keys (``fs:/srv/git``, ``github:github.com/acme``) read as themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

from dagster import DynamicPartitionsDefinition

from enum_pipeline.defs.constants import SCOPES_PARTITIONS

SCOPES = DynamicPartitionsDefinition(name=SCOPES_PARTITIONS)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"

_ESCAPED = re.compile(r"[%,\[\]\x00-\x1f\x7f]")
_DOTS = re.compile(r"\.{3,}")


def partition_key(scope_key: str) -> str:
    """The partition key of a scope key (reversible by ``scope_key``)."""
    escaped = _ESCAPED.sub(lambda m: f"%{ord(m.group()):02X}", scope_key)
    return _DOTS.sub(lambda m: "%2E" * len(m.group()), escaped)


def scope_key(partition_key: str) -> str:
    """The scope key a partition key stands for."""
    return unquote(partition_key)


def partition_keys(scope_keys: Iterable[str]) -> list[str]:
    """The partition keys of ``scope_keys``, each once, in order."""
    return list(dict.fromkeys(partition_key(k) for k in scope_keys))


def configured_partition_keys(pipeline) -> list[str]:
    """The partition keys of every scope a configuration (``PipelineConfig``) reads."""
    return partition_keys(k for s in pipeline.build_sources() for k in s.scope_keys())


def sync_plan(current: Sequence[str], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(to_add, to_delete)`` that make the partition keys ``current`` equal ``wanted``."""
    have, want = set(current), set(wanted)
    return [k for k in wanted if k not in have], [k for k in current if k not in want]


def run_partition_tags(keys: Sequence[str]) -> dict[str, str]:
    """The tags of a run over ``keys``: one partition, or the range from the first to the last
    (none for no keys)."""
    if not keys:
        return {}
    if len(keys) == 1:
        return {PARTITION_TAG: keys[0]}
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def partition_tags_of(tags: dict[str, str]) -> dict[str, str]:
    """The partition (or partition-range) tags among a run's ``tags``."""
    return {k: v for k, v in tags.items() if k in (PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG)}
