"""Stream sources into the store's durable staging, in batches, ending every scope with a verdict.

No Dagster here: ``steps.start_run`` calls ``stage_sources`` after ``begin``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from enum_pipeline.sources.base import ProjectRecord, ScanItem, ScopeVerdict, Source
from enum_pipeline.sources.sanitize import Rejected, screen
from enum_pipeline.store import InventoryStore, QuarantinedRecord

#: How many quarantined records the summary's plain data lists (all are in the store).
QUARANTINE_LISTED = 100


@dataclass
class ScanSummary:
    """What one scan staged, and how it ended each scope."""

    run_id: str
    generation: int
    scanned: int = 0
    staged: int = 0
    seconds: float = 0.0
    verdicts: list[ScopeVerdict] = field(default_factory=list)
    #: Records the database could not take (not staged; their scopes are incomplete).
    quarantined: list[QuarantinedRecord] = field(default_factory=list)

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
            "quarantined_count": len(self.quarantined),
            "quarantined": [
                {"scope_key": q.scope_key, "project_key": q.project_key, "reason": q.reason}
                for q in self.quarantined[:QUARANTINE_LISTED]
            ],
            "scopes": [
                {
                    "scope_key": v.scope_key,
                    "source_kind": v.source_kind,
                    "complete": v.complete,
                    "seen": v.seen,
                    "reason": v.reason,
                    "protected": list(v.protected),
                    "protected_reasons": dict(v.protected_reasons),
                    "identity": dict(v.identity),
                    "coverage": dict(v.coverage),
                    "budget": dict(v.budget),
                }
                for v in self.verdicts
            ],
        }


ProgressFn = Callable[[ScanSummary], None]


class _Progress:
    """The summary's counters, shared by the sources' threads, and the periodic report."""

    def __init__(self, summary: ScanSummary, on_progress: ProgressFn | None, every: float):
        self.summary, self.on_progress, self.every = summary, on_progress, every
        self.started = self.last_report = time.monotonic()
        self.lock = threading.Lock()

    def record(self, staged: int, scanned: int, verdict: ScopeVerdict | None = None) -> None:
        with self.lock:
            self.summary.staged += staged
            self.summary.scanned += scanned
            if verdict is not None:
                self.summary.verdicts.append(verdict)
            now = time.monotonic()
            if self.on_progress and now - self.last_report >= self.every:
                self.summary.seconds = now - self.started
                self.on_progress(self.summary)
                self.last_report = now


def _next_item(items) -> tuple[ScanItem | None, str | None]:
    """The source's next item, or (None, None) at its end, or (None, why) when it raised."""
    try:
        return next(items), None
    except StopIteration:
        return None, None
    except Exception as err:  # a broken source ends only its own scopes, never the run
        return None, f"{type(err).__name__}: {err}"


def _scan_one(
    store: InventoryStore, run_id: str, source: Source, batch_size: int, progress: _Progress
) -> None:
    """Stream one source into staging; every scope it did not end is ended incomplete.

    Every record passes ``screen``: one the database cannot take is quarantined (before the
    batch it came with is staged, so before its scope ends, which makes the scope incomplete).
    """
    batch: list[ProjectRecord] = []
    rejected: list[Rejected] = []

    def flush_batch() -> None:
        if rejected:
            store.quarantine(run_id, [(q.record, q.reason) for q in rejected])
            progress.record(0, len(rejected))
            rejected.clear()
        if batch:
            progress.record(store.stage(run_id, batch), len(batch))
            batch.clear()

    def end(verdict: ScopeVerdict) -> None:
        flush_batch()
        progress.record(0, 0, store.end_scope(run_id, verdict))

    expected = list(source.scope_keys())
    ended: set[str] = set()
    items = iter(source.scan())
    while True:
        item, failure = _next_item(items)
        if item is None:
            break
        if isinstance(item, ScopeVerdict):
            end(item)
            ended.add(item.scope_key)
            continue
        checked = screen(item)
        if checked is item:
            batch.append(item)
        else:
            rejected.append(checked)
        if len(batch) + len(rejected) >= batch_size:
            flush_batch()
    flush_batch()
    reason = (
        f"source failed: {failure}" if failure else "source ended without a verdict for this scope"
    )
    for scope_key in expected:
        if scope_key not in ended:
            end(ScopeVerdict(scope_key, source.kind, complete=False, reason=reason))


def stage_sources(
    store: InventoryStore,
    run_id: str,
    generation: int,
    sources: Sequence[Source],
    *,
    batch_size: int = 1000,
    parallel_sources: int = 1,
    on_progress: ProgressFn | None = None,
    progress_every: float = 5.0,
) -> ScanSummary:
    """Scan every source into the run's staging; return the summary.

    With ``parallel_sources`` > 1, that many sources stream at once (threads: code-host APIs and
    disks are I/O bound); each keeps its own batches and scope verdicts. A source that raises, or
    ends without a verdict for one of its scopes, makes those scopes incomplete (their projects
    are protected), never empty. A record the database cannot take is quarantined with its
    reason (``sources.sanitize.screen``, and the store's fallback when staging its batch), its
    scope made incomplete; every other record and scope goes on. Store errors propagate and end
    the scan.
    """
    summary = ScanSummary(run_id, generation)
    progress = _Progress(summary, on_progress, progress_every)
    if parallel_sources <= 1 or len(sources) <= 1:
        for source in sources:
            _scan_one(store, run_id, source, batch_size, progress)
    else:
        with ThreadPoolExecutor(max_workers=parallel_sources, thread_name_prefix="scan") as pool:
            futures = [
                pool.submit(_scan_one, store, run_id, source, batch_size, progress)
                for source in sources
            ]
            for future in futures:
                future.result()
    summary.seconds = time.monotonic() - progress.started
    summary.quarantined = store.quarantined(run_id)
    return summary
