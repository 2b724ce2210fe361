"""Bounded statements: how many keys one statement binds when rows are moved in chunks.

PostgreSQL takes at most 65,535 bind parameters a statement and SQLite 32,766 (999 before
3.32), so no statement may bind a list that grows with the data: the store moves rows set-based
(``INSERT … SELECT``, ``UPDATE … WHERE run_id = :run``) or in chunks of ``CHUNK`` keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

CHUNK = 2000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
