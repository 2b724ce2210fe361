"""Stream sources into the store's durable staging, in batches, ending every scope with a verdict.

No Dagster here: ``steps.start_run`` calls ``stage_sources`` after ``begin``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict, Source
from enum_pipeline.store import InventoryStore


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
                    "protected_reasons": dict(v.protected_reasons),
                    "identity": dict(v.identity),
                    "coverage": dict(v.coverage),
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
    parallel_sources: int = 1,
    on_progress: ProgressFn | None = None,
    progress_every: float = 5.0,
) -> ScanSummary:
    """Scan every source into the run's staging; return the summary.

    With ``parallel_sources`` > 1, that many sources stream at once (threads: code-host APIs and
    disks are I/O bound); each keeps its own batches and scope verdicts. A source that raises, or
    ends without a verdict for one of its scopes, makes those scopes incomplete (their projects
    are protected), never empty. Store errors propagate and end the scan.
    """
    summary = ScanSummary(run_id, generation)
    started = time.monotonic()
    lock = threading.Lock()
    last_report = [started]

    def record(staged: int, scanned: int, verdict: ScopeVerdict | None = None) -> None:
        with lock:
            summary.staged += staged
            summary.scanned += scanned
            if verdict is not None:
                summary.verdicts.append(verdict)
            now = time.monotonic()
            if on_progress and now - last_report[0] >= progress_every:
                summary.seconds = now - started
                on_progress(summary)
                last_report[0] = now

    def scan_one(source: Source) -> None:
        batch: list[ProjectRecord] = []

        def flush_batch() -> None:
            if batch:
                staged = store.stage(run_id, batch)
                record(staged, len(batch))
                batch.clear()

        expected = list(source.scope_keys())
        ended: set[str] = set()
        failure: str | None = None
        items = iter(source.scan())
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception as err:  # a broken source ends only its own scopes, never the run
                failure = f"{type(err).__name__}: {err}"
                break
            if isinstance(item, ScopeVerdict):
                flush_batch()
                store.end_scope(run_id, item)
                record(0, 0, item)
                ended.add(item.scope_key)
            else:
                batch.append(item)
                if len(batch) >= batch_size:
                    flush_batch()
        flush_batch()
        for scope_key in expected:
            if scope_key in ended:
                continue
            reason = (
                f"source failed: {failure}"
                if failure
                else "source ended without a verdict for this scope"
            )
            verdict = ScopeVerdict(scope_key, source.kind, complete=False, reason=reason)
            store.end_scope(run_id, verdict)
            record(0, 0, verdict)

    if parallel_sources <= 1 or len(sources) <= 1:
        for source in sources:
            scan_one(source)
    else:
        with ThreadPoolExecutor(max_workers=parallel_sources, thread_name_prefix="scan") as pool:
            for future in [pool.submit(scan_one, source) for source in sources]:
                future.result()
    summary.seconds = time.monotonic() - started
    return summary
