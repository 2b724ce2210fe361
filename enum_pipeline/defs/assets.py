"""Assets of one enumeration run: scan → flush (upsert, verify) → run state; and the cleanup."""

from dataclasses import asdict

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    asset,
    graph_asset,
    op,
)
from pydantic import Field

from enum_pipeline.defs.catalog import catalog, database_kind, freshness, source_kinds
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.scan import ScanSummary
from enum_pipeline.steps import finish_run, flush_run, start_run, verify_run

GROUP = "inventory"
PREVIEW_ROWS = 20
DB_KINDS = {database_kind()}
CATALOG = {"owners": catalog().owners, "tags": catalog().tags}


class ScanConfig(Config):
    """Run config of ``scanned_projects``: overrides of the configured sources."""

    config_path: str | None = Field(
        default=None, description="YAML configuration file (default: ENUM_PIPELINE_CONFIG)."
    )
    roots: list[str] | None = Field(
        default=None, description="Scan these folders instead of the configured sources."
    )


# The executors that run every step of a job in the launching process: the run's holder (its
# pid, its lease, its heartbeat thread; see enum_pipeline.steps) must outlive the first step.
IN_PROCESS_EXECUTORS = ("in_process", "execute_in_process_executor")


def _require_in_process(context: AssetExecutionContext) -> None:
    executor = context.job_def.executor_def.name
    if executor not in IN_PROCESS_EXECUTORS:
        raise Failure(
            f"the enumeration must run under the in-process executor, not {executor!r}: its "
            "steps share the process that holds the run (pid, lease, heartbeat thread)"
        )


def _scope_table(scopes: list[dict]) -> MetadataValue:
    lines = ["| scope | complete | seen | reason |", "|---|---|---|---|"]
    for s in scopes:
        reason = (s.get("reason") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s['scope_key']} | {s['complete']} | {s['seen']} | {reason} |")
    return MetadataValue.md("\n".join(lines))


@asset(group_name=GROUP, kinds=source_kinds(), **CATALOG)
def scanned_projects(
    context: AssetExecutionContext, config: ScanConfig, inventory: InventoryResource
) -> Output[dict]:
    """Begin the run, then stream every source into the run's durable staging table.

    Every scope ends complete or incomplete; an incomplete scope protects its projects.
    """
    _require_in_process(context)
    pipeline = inventory.pipeline_config(config.config_path, config.roots)
    sources = pipeline.build_sources()
    store = inventory.store()
    run_id = context.run.run_id

    def progress(summary: ScanSummary) -> None:
        context.log.info(
            f"scan progress: {summary.scanned} projects, {len(summary.verdicts)} scopes ended, "
            f"{summary.seconds:.0f}s"
        )

    # The run carries the policy its cleanup applies, and (unless roots were given ad hoc) the
    # configured scopes, so rows of any other scope become orphans instead of candidates.
    configured = None if config.roots else [k for s in sources for k in s.scope_keys()]
    summary = start_run(
        store,
        run_id,
        sources,
        policy=pipeline.cleanup,
        configured_scopes=configured,
        batch_size=pipeline.batch_size,
        parallel_sources=pipeline.parallel_sources,
        on_progress=progress,
        log=lambda m: context.log.info(f"{m} on {inventory.display_url()}"),
    )
    generation = summary.generation
    data = summary.as_dict()
    for verdict in summary.incomplete:
        context.log.warning(f"scope {verdict.scope_key} incomplete: {verdict.reason}")
    return Output(
        data,
        metadata={
            "run_id": run_id,
            "generation": generation,
            "scanned": summary.scanned,
            "staged": summary.staged,
            "scopes": len(summary.verdicts),
            "incomplete_scopes": len(summary.incomplete),
            "scan_seconds": round(summary.seconds, 3),
            "scope_verdicts": _scope_table(data["scopes"]),
        },
    )


@op(out=Out(dict))
def upsert_projects(
    context: OpExecutionContext, inventory: InventoryResource, scanned: dict
) -> dict:
    """Set-based upsert of the run's staged records into ``projects``.

    In a re-execution (a new Dagster run) the staged run is resumed, never re-scanned.
    """
    run_id = scanned["run_id"]
    result = flush_run(inventory.store(), run_id, context.run_id, log=context.log.info)
    context.log.info(
        f"flushed {result.staged}: {result.added} added, {result.changed} changed, "
        f"{result.unchanged} unchanged"
    )
    return asdict(result)


@op(out=Out(dict))
def verify_flush(context: OpExecutionContext, inventory: InventoryResource, flushed: dict):
    """Prove every staged record landed with this run's generation, then confirm the rows.

    A failed proof marks the run failed and is recorded as ``flush_succeeded=False`` (the
    blocking check on ``projects`` then stops the run, and the cleanup sensor skips it).
    """
    store = inventory.store()
    run_id = flushed["run_id"]
    outcome = verify_run(store, run_id)
    error, confirmed = outcome.error, outcome.confirmed
    value = {**flushed, "flush_succeeded": error is None, "confirmed": confirmed, "error": error}
    preview = store.projects(limit=PREVIEW_ROWS)
    yield Output(
        value,
        metadata={
            "flush_succeeded": error is None,
            "run_id": run_id,
            "generation": flushed["generation"],
            "staged": flushed["staged"],
            "added": flushed["added"],
            "changed": flushed["changed"],
            "unchanged": flushed["unchanged"],
            "confirmed": confirmed,
            "dagster/row_count": store.count_projects(),
            "error": error or "",
            "preview": MetadataValue.md(_preview_table(preview)),
        },
    )


def _preview_table(rows: list[dict]) -> str:
    lines = ["| name | vcs | location | branch | markers |", "|---|---|---|---|---|"]
    for r in rows:
        markers = ", ".join(r.get("markers") or [])
        cells = [r["name"], r["vcs"] or "", r["location"], r["default_branch"] or "", markers]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@graph_asset(group_name=GROUP, kinds=DB_KINDS, **CATALOG)
def projects(scanned_projects: dict) -> dict:
    """The inventory table: the run's flush (``upsert_projects`` → ``verify_flush``)."""
    return verify_flush(upsert_projects(scanned_projects))


# fresh when a run has completed since the schedule's last tick (run_state materializes then)
@asset(group_name=GROUP, kinds=DB_KINDS, freshness_policy=freshness(), **CATALOG)
def run_state(
    context: AssetExecutionContext, inventory: InventoryResource, projects: dict
) -> Output[dict]:
    """Complete the run: ``completed`` iff its flush was verified, else ``failed``."""
    run_id = projects["run_id"]
    finished = finish_run(inventory.store(), run_id, log=context.log.info)
    status, info = finished.status, finished.info
    metadata = {
        "run_id": run_id,
        "generation": info.generation,
        "status": status,
        "flush_succeeded": info.flush_succeeded,
        "scanned": info.scanned_count,
        "added": info.added_count,
        "changed": info.changed_count,
        "unchanged": info.unchanged_count,
        "confirmed": info.confirmed_count,
        "error": info.error or "",
    }
    if status != "completed":
        raise Failure(f"run {run_id} ended {status}: {info.error}", metadata=metadata)
    return Output({"run_id": run_id, "status": status}, metadata=metadata)


class CleanupConfig(Config):
    """Run config of ``stale_projects_cleanup``."""

    run_id: str = Field(description="The enumeration run whose cleanup this is.")
    approve: bool = Field(
        default=False,
        description="Approve this run's blocked cleanup: exactly the projects its plan listed.",
    )
    dry_run: bool = Field(default=False, description="Show what would be removed; change nothing.")
    config_path: str | None = Field(
        default=None,
        description="Ignored: the cleanup applies the policy its run began with (approve, "
        "never loosen).",
    )


@asset(group_name=GROUP, kinds=DB_KINDS, deps=[AssetKey("projects")], **CATALOG)
def stale_projects_cleanup(
    context: AssetExecutionContext, config: CleanupConfig, inventory: InventoryResource
) -> Output[dict]:
    """Remove what a completed, verified run did not see (``safe_cleanup_old_projects``).

    Requested only by the ``cleanup_after_confirmed_flush`` sensor or by an operator.
    """
    store = inventory.store()
    approver = f"dagster run {context.run.run_id}" if config.approve else None
    if config.approve:
        store.approve_cleanup(config.run_id, approver)
    result = store.safe_cleanup_old_projects(
        config.run_id, dry_run=config.dry_run, approved_by=approver
    )
    data = result.as_dict()
    lines = [
        "| scope | complete | total | candidates | removed | kept (protected) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result.scopes:
        note = (s.blocked_reason or s.skipped_reason or "").replace("|", "\\|")
        lines.append(
            f"| {s.scope_key} | {s.complete} | {s.total} | {s.candidates} | {s.removed} "
            f"| {s.protected} | {note} |"
        )
    if result.status == "blocked":
        context.log.warning(
            f"cleanup of run {config.run_id} held back by the deletion guard: {result.reason}. "
            "Approve it with run config approve: true or `enum-pipeline approve "
            f"{config.run_id}`."
        )
    return Output(
        data,
        metadata={
            "run_id": config.run_id,
            "status": result.status,
            "dry_run": result.dry_run,
            "candidates": result.candidates,
            "removed": result.removed,
            "would_remove": result.would_remove,
            "out_of_coverage": result.out_of_coverage,
            "orphaned": result.orphaned,
            "held": result.held,
            "marked_missing": result.marked_missing,
            "kept_incomplete": result.kept_incomplete,
            "reason": result.reason or "",
            "scopes": MetadataValue.md("\n".join(lines)),
        },
    )
