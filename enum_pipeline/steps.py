"""The steps of one enumeration run, without Dagster: start → flush → verify → finish.

The assets, the CLI, the benchmarks and the test helpers all run a run through these functions,
so the recipe (fail the run on any error, resume on re-execution, prune staging, when a cleanup
is due) is written once.

Couplings that keep a run alive between its steps:

* **One process for all steps.** ``start_run`` begins the run as *this* process (``run_state``
  records its host and pid; on PostgreSQL a connection of this process holds the run's lease)
  and starts a ``RunHolder``, a heartbeat thread of this process. The later steps must run in
  the same process — Dagster's in-process executor (``enumerate_projects`` sets it). Under an
  executor that runs each step in a process of its own, the first step's process exits with the
  pid, the lease and the heartbeat thread, and the run would look abandoned: ``flush_run``
  refuses such a run at once (``StepProcessError``) instead of flushing it.
* **One store per process.** The lease lives on the ``InventoryStore`` that began the run, and
  the holder registry is per process; callers pass the same store to every step
  (``InventoryResource.store()`` caches one per URL).

A Dagster re-execution is a new attempt (a new Dagster run id), possibly in a new process:
``flush_run`` then resumes the run, which makes this process its holder.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from enum_pipeline.scan import ProgressFn, ScanSummary, stage_sources
from enum_pipeline.sources.base import Source
from enum_pipeline.store import (
    CleanupPolicy,
    FlushResult,
    FlushVerificationError,
    InventoryStore,
    RunInfo,
    RunStatus,
    StoreError,
    UnknownRunError,
)

log = logging.getLogger(__name__)

# Staging of this many newest runs is kept after a run completes (the run delta compares the
# two newest completed runs, so never fewer than 2).
STAGING_RUNS_KEPT = 2

# The holder beats this often, as a share of the store's heartbeat timeout.
HEARTBEAT_SHARE = 0.25

LogFn = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class StepProcessError(StoreError):
    """A step of a run ran in a process that does not hold the run."""


# ------------------------------------------------------------------------------ the holder


class RunHolder:
    """The thread that beats a run's heartbeat for its whole life (scan, waits, flush, verify).

    One per run and process, started at ``begin``/``resume`` and stopped when the run ends here
    (``finish_run``, or any step failing it) or is seen no longer active. While it runs, the
    store counts this process as the run's live holder (``InventoryStore.hold_here``).
    """

    _holders: dict[tuple[int, str], RunHolder] = {}
    _lock = threading.Lock()

    def __init__(self, store: InventoryStore, run_id: str, interval: float):
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"enum-pipeline-heartbeat-{run_id}", daemon=True
        )

    @classmethod
    def start(cls, store: InventoryStore, run_id: str) -> RunHolder:
        """Start (or keep) the holder of ``run_id`` in this process."""
        interval = max(store.heartbeat_timeout.total_seconds() * HEARTBEAT_SHARE, 0.05)
        with cls._lock:
            holder = cls._holders.get((id(store), run_id))
            if holder is not None and holder.alive:
                return holder
            holder = cls(store, run_id, interval)
            cls._holders[(id(store), run_id)] = holder
            store.hold_here(run_id)
            holder._thread.start()
        return holder

    @classmethod
    def of(cls, store: InventoryStore, run_id: str) -> RunHolder | None:
        """The live holder of ``run_id`` in this process, if any."""
        holder = cls._holders.get((id(store), run_id))
        return holder if holder is not None and holder.alive else None

    @classmethod
    def stop_for(cls, store: InventoryStore, run_id: str) -> None:
        """Stop the holder of ``run_id`` in this process (no-op when there is none)."""
        with cls._lock:
            holder = cls._holders.pop((id(store), run_id), None)
        if holder is not None:
            holder.stop()

    @property
    def alive(self) -> bool:
        """True while the heartbeat thread runs."""
        return self._thread.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        """Stop beating and wait for the thread to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(self.interval * 4, 10))

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.store.heartbeat(self.run_id):
                        return  # failed or completed elsewhere: nothing left to keep alive
                except Exception as err:  # noqa: BLE001 - a lost beat must not end the run
                    log.warning("heartbeat of run %s failed: %s", self.run_id, err)
        finally:
            self.store.release_here(self.run_id)


def _fail(store: InventoryStore, run_id: str, reason: str) -> None:
    RunHolder.stop_for(store, run_id)
    store.fail(run_id, reason)


def _error(step: str, err: BaseException) -> str:
    return f"{step} failed: {type(err).__name__}: {err}"


# ------------------------------------------------------------------------------ the steps


def start_run(
    store: InventoryStore,
    run_id: str,
    sources: Sequence[Source] | Callable[[], Sequence[Source]],
    *,
    batch_size: int = 1000,
    parallel_sources: int = 1,
    on_progress: ProgressFn | None = None,
    log: LogFn = _quiet,
    policy: CleanupPolicy | None = None,
    configured_scopes: Iterable[str] | None = None,
    scopes: Iterable[str] | None = None,
) -> ScanSummary:
    """Begin run ``run_id``, start its holder, and stage every source (a callable is called
    after ``begin``, so an error building the sources fails the run). Any error fails the run
    and is raised. ``policy``, ``configured_scopes`` and ``scopes`` are recorded with the run
    (see ``InventoryStore.begin``); ``scopes`` defaults to the scope keys of ``sources`` when
    they are a sequence, else (a callable) the run claims the whole inventory."""
    if scopes is None and not callable(sources):
        scopes = [k for s in sources for k in s.scope_keys()]
    generation = store.begin(
        run_id, policy=policy, configured_scopes=configured_scopes, scopes=scopes
    )
    RunHolder.start(store, run_id)
    log(f"run {run_id}: generation {generation}, holder pid {os.getpid()}")
    try:
        built = sources() if callable(sources) else sources
        return stage_sources(
            store,
            run_id,
            generation,
            built,
            batch_size=batch_size,
            parallel_sources=parallel_sources,
            on_progress=on_progress,
        )
    except BaseException as err:
        _fail(store, run_id, _error("scan", err))
        raise


def flush_run(
    store: InventoryStore, run_id: str, attempt_id: str | None = None, *, log: LogFn = _quiet
) -> FlushResult:
    """Flush the run's staging into ``projects``; any error fails the run and is raised.

    ``attempt_id``: the orchestrator's id of this attempt (Dagster run id). When it is not
    ``run_id``, this is a re-execution and the run is resumed from its staging (never
    re-scanned). In the run's own attempt, this process must hold the run (see the module's
    docstring); otherwise the run is failed and ``StepProcessError`` raised.
    """
    if attempt_id is not None and attempt_id != run_id:
        generation = store.resume(run_id, attempt_id)
        RunHolder.start(store, run_id)
        log(f"resuming run {run_id} (generation {generation}) from its staging")
    elif RunHolder.of(store, run_id) is None:
        reason = (
            f"run {run_id} was begun by another process than this step's (pid {os.getpid()}): "
            "run the enumeration job with the in-process executor"
        )
        store.fail(run_id, reason)
        raise StepProcessError(reason)
    try:
        return store.flush(run_id)
    except BaseException as err:
        _fail(store, run_id, _error("flush", err))
        raise


@dataclass(frozen=True)
class VerifyOutcome:
    """What ``verify_run`` proved: ``flush_succeeded`` and, when not, the proof's ``error``."""

    run_id: str
    flush_succeeded: bool
    confirmed: int
    error: str | None


def verify_run(store: InventoryStore, run_id: str) -> VerifyOutcome:
    """Prove the flush and confirm the rows. A failed proof fails the run and is returned as an
    outcome, never raised; any other error fails the run and is raised."""
    try:
        verified = store.verify_and_confirm(run_id)
    except FlushVerificationError as err:
        _fail(store, run_id, f"flush verification failed: {err}")
        return VerifyOutcome(run_id, False, 0, str(err))
    except BaseException as err:
        _fail(store, run_id, _error("verify", err))
        raise
    return VerifyOutcome(run_id, True, verified.confirmed, None)


@dataclass(frozen=True)
class FinishOutcome:
    """How the run ended (``status``), its row, and the staged rows of older runs dropped."""

    status: str
    info: RunInfo
    pruned: int


def finish_run(store: InventoryStore, run_id: str, *, log: LogFn = _quiet) -> FinishOutcome:
    """Complete the run (``completed`` iff its flush was verified, else ``failed``), stop its
    holder, and keep the staging of the ``STAGING_RUNS_KEPT`` newest runs."""
    try:
        status = store.complete(run_id)
    except BaseException as err:
        _fail(store, run_id, _error("complete", err))
        raise
    RunHolder.stop_for(store, run_id)
    pruned = store.prune_staging(keep_runs=STAGING_RUNS_KEPT) if status == "completed" else 0
    if pruned:
        log(f"dropped {pruned} staged rows of older runs")
    return FinishOutcome(status, store.get_run(run_id), pruned)


def fail_run(store: InventoryStore, run_id: str, reason: str) -> None:
    """Fail the active run ``run_id`` and stop its holder in this process."""
    _fail(store, run_id, reason)


# ------------------------------------------------------------------------------ cleanup due


@dataclass(frozen=True)
class CleanupDue:
    """Whether run ``run_id``'s cleanup is due; ``wait`` when it cannot be told yet."""

    due: bool
    reason: str
    wait: bool = False


def cleanup_due(store: InventoryStore, run_id: str) -> CleanupDue:
    """The one rule for "is a cleanup of ``run_id`` due?" (the sensor and the CLI ask it).

    Due iff the run is known, has ended ``completed``, and its flush was verified. A run still
    active is not decided yet (``wait``).
    """
    try:
        info = store.get_run(run_id)
    except UnknownRunError:
        return CleanupDue(False, f"run {run_id} is unknown to the inventory database")
    if info.status == RunStatus.ACTIVE:
        return CleanupDue(False, f"run {run_id} has not completed yet; waiting", wait=True)
    if not info.flush_succeeded:
        return CleanupDue(
            False,
            f"flush of run {run_id} was not confirmed ({info.error or 'unknown'}); "
            "nothing to clean",
        )
    if info.status != RunStatus.COMPLETED:
        return CleanupDue(
            False, f"run {run_id} ended {info.status} ({info.error}); nothing to clean"
        )
    return CleanupDue(True, f"run {run_id} completed with a verified flush")


# ------------------------------------------------------------------------------ which run


def resolve_run(
    store: InventoryStore,
    given: str,
    *,
    removals: bool = False,
    dagster_run_of: Callable[[str], str | None] | None = None,
) -> str:
    """The one answer to "which run does this id name?" (the cleanup, approval and restore ask
    it): ``InventoryStore.resolve_run_id`` (the id itself or a unique prefix; with ``removals``
    also a prune's id), else, through ``dagster_run_of``, the enumeration run the Dagster run
    with that id was about (a cleanup's or approval's run, tagged with it).

    Raises the store's ``AmbiguousRunError`` (a prefix matching several), or its
    ``UnknownRunError`` (naming the newest runs) when neither names a run.
    """
    try:
        return store.resolve_run_id(given, removals=removals)
    except UnknownRunError:
        run_id = dagster_run_of(given) if dagster_run_of is not None else None
        if run_id:
            return run_id
        raise


def run_through(
    store: InventoryStore,
    run_id: str,
    sources: Sequence[Source] | Callable[[], Sequence[Source]],
    **start_kwargs,
) -> tuple[ScanSummary, VerifyOutcome, FinishOutcome]:
    """All four steps in one call (benchmarks, tests): start, flush, verify, finish."""
    summary = start_run(store, run_id, sources, **start_kwargs)
    flush_run(store, run_id)
    verified = verify_run(store, run_id)
    return summary, verified, finish_run(store, run_id)
