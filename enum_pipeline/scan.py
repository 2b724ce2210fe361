"""Stream sources into the store's durable staging, in batches, ending every scope with a verdict.

No Dagster here: the asset calls ``stage_sources`` and only records what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict, Source
from enum_pipeline.store.lifecycle import InventoryStore


@dataclass
class ScanSummary:
    """What one scan staged, and how it ended each scope."""

    run_id: str
    generation: int
    scanned: int = 0
    staged: int = 0
    seconds: float = 0.0
    verdicts: list[ScopeVerdict] = field(default_factory=list)

    @property
    def incomplete(self) -> list[ScopeVerdict]:
        """Scopes that were not read completely."""
        return [v for v in self.verdicts if not v.complete]

    def as_dict(self) -> dict:
        """Plain data (the asset's output)."""
        return {
            "run_id": self.run_id,
            "generation": self.generation,
            "scanned": self.scanned,
            "staged": self.staged,
            "seconds": round(self.seconds, 3),
            "scopes": [
                {
                    "scope_key": v.scope_key,
                    "source_kind": v.source_kind,
                    "complete": v.complete,
                    "seen": v.seen,
                    "reason": v.reason,
                    "protected": list(v.protected),
                }
                for v in self.verdicts
            ],
        }


ProgressFn = Callable[[ScanSummary], None]


def stage_sources(
    store: InventoryStore,
    run_id: str,
    generation: int,
    sources: Sequence[Source],
    *,
    batch_size: int = 1000,
    on_progress: ProgressFn | None = None,
    progress_every: float = 5.0,
) -> ScanSummary:
    """Scan every source into the run's staging; return the summary.

    A source that raises, or ends without a verdict for one of its scopes, makes those scopes
    incomplete (their projects are protected), never empty. Store errors propagate.
    """
    summary = ScanSummary(run_id, generation)
    started = time.monotonic()
    last_report = started
    batch: list[ProjectRecord] = []

    def flush_batch() -> None:
        nonlocal last_report
        if batch:
            summary.staged += store.stage(run_id, batch)
            summary.scanned += len(batch)
            batch.clear()
        now = time.monotonic()
        if on_progress and now - last_report >= progress_every:
            summary.seconds = now - started
            on_progress(summary)
            last_report = now

    for source in sources:
        expected = list(source.scope_keys())
        ended: set[str] = set()
        failure: str | None = None
        try:
            for item in source.scan():
                if isinstance(item, ScopeVerdict):
                    flush_batch()
                    store.end_scope(run_id, item)
                    summary.verdicts.append(item)
                    ended.add(item.scope_key)
                else:
                    batch.append(item)
                    if len(batch) >= batch_size:
                        flush_batch()
        except Exception as err:  # a broken source must not end the run, only its scopes
            if _is_store_error(err):
                raise
            failure = f"{type(err).__name__}: {err}"
        flush_batch()
        for scope_key in expected:
            if scope_key in ended:
                continue
            verdict = ScopeVerdict(
                scope_key=scope_key,
                source_kind=source.kind,
                complete=False,
                reason=(
                    f"source failed: {failure}"
                    if failure
                    else "source ended without a verdict for this scope"
                ),
            )
            store.end_scope(run_id, verdict)
            summary.verdicts.append(verdict)
    summary.seconds = time.monotonic() - started
    return summary


def _is_store_error(err: Exception) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from enum_pipeline.store.lifecycle import StoreError

    return isinstance(err, SQLAlchemyError | StoreError)
