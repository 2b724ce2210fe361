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

from enum_pipeline.defs import cleanup_notice, tables
from enum_pipeline.defs.catalog import catalog, database_kind, freshness, source_kinds
from enum_pipeline.defs.constants import (
    CLEANUP_POOL,
    ENUMERATION_RUN_TAG,
    INVENTORY_POOL,
    dagster_run_lookup,
)
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.scan import ScanSummary
from enum_pipeline.steps import finish_run, flush_run, resolve_run, start_run, verify_run
from enum_pipeline.store import AmbiguousRunError, StoreError, UnknownRunError

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


QUARANTINE_LISTED = 20


def _quarantine_md(summary: ScanSummary) -> MetadataValue:
    """The records the database could not take, with why (capped: the CLI lists all)."""
    quarantined = summary.quarantined
    if not quarantined:
        return MetadataValue.md("none")
    lines = ["| scope | project key | reason |", "|---|---|---|"]
    for q in quarantined[:QUARANTINE_LISTED]:
        cells = (
            c.replace("|", "\\|").replace("\n", " ") for c in (q.scope_key, q.project_key, q.reason)
        )
        lines.append("| " + " | ".join(cells) + " |")
    if len(quarantined) > QUARANTINE_LISTED:
        lines.append(
            f"\n{len(quarantined) - QUARANTINE_LISTED} more: "
            f"`enum-pipeline runs --quarantined {summary.run_id}`"
        )
    return MetadataValue.md("\n".join(lines))


ENUMERATION = {AssetKey("scanned_projects"), AssetKey("projects"), AssetKey("run_state")}


def refuse_partial_enumeration(context) -> None:
    """One sentence, before anything begins, when a run selects part of the enumeration."""
    selection = context.run.asset_selection
    if selection and not set(selection) >= ENUMERATION:
        raise Failure(
            "scanned_projects, projects and run_state are one run: launch the job "
            "enumerate_projects (or materialize the three together); nothing was begun"
        )


@asset(group_name=GROUP, kinds=source_kinds(), pool=INVENTORY_POOL, **CATALOG)
def scanned_projects(
    context: AssetExecutionContext, config: ScanConfig, inventory: InventoryResource
) -> Output[dict]:
    """Begin the run, then stream every source into the run's durable staging table.

    Every scope ends complete or incomplete; an incomplete scope protects its projects.
    """
    _require_in_process(context)
    refuse_partial_enumeration(context)
    from enum_pipeline.config import ConfigError

    try:
        pipeline = inventory.pipeline_config(config.config_path, config.roots)
        sources = pipeline.build_sources()  # every source checked before the run begins
    except ConfigError as err:
        raise Failure(str(err)) from None
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
    for q in summary.quarantined[:QUARANTINE_LISTED]:
        context.log.warning(f"quarantined {q.project_key} ({q.scope_key}): {q.reason}")
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
            "quarantined": len(summary.quarantined),
            "quarantined_records": _quarantine_md(summary),
        },
    )


@op(out=Out(dict), pool=INVENTORY_POOL)
def upsert_projects(
    context: OpExecutionContext, inventory: InventoryResource, scanned: dict
) -> dict:
    """Set-based upsert of the run's staged records into ``projects``.

    In a re-execution (a new Dagster run) the staged run is resumed, never re-scanned.
    """
    refuse_partial_enumeration(context)
    run_id = scanned["run_id"]
    if context.run_id != run_id and context.run.parent_run_id is None:
        raise Failure(
            "projects is written by its own scan: launch the job enumerate_projects "
            "(or re-execute a failed enumeration from failure); nothing was begun"
        )
    result = flush_run(inventory.store(), run_id, context.run_id, log=context.log.info)
    context.log.info(
        f"flushed {result.staged}: {result.added} added, {result.changed} changed, "
        f"{result.unchanged} unchanged"
    )
    return asdict(result)


@op(out=Out(dict), pool=INVENTORY_POOL)
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
    delta = [c for c in store.run_changes(run_id) if c.change != "removed"]
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
            "dagster/table_name": "projects",
            "dagster/column_schema": tables.projects_column_schema(),
            **tables.table_metadata(
                "added_and_changed",
                tables.change_rows(delta),
                tables.CHANGE_SCHEMA,
                f"enum-pipeline diff {run_id}",
            ),
            "scopes": scope_summary(store),
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
@asset(
    group_name=GROUP,
    kinds=DB_KINDS,
    freshness_policy=freshness(),
    pool=INVENTORY_POOL,
    **CATALOG,
)
def run_state(
    context: AssetExecutionContext, inventory: InventoryResource, projects: dict
) -> Output[dict]:
    """Complete the run: ``completed`` iff its flush was verified, else ``failed``."""
    refuse_partial_enumeration(context)
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

    run_id: str | None = Field(
        default=None,
        description=(
            "The enumeration run whose cleanup this is (or the Dagster run id of its cleanup). "
            "Empty: with approve, the newest run's blocked cleanup; else the newest completed run."
        ),
    )
    approve: bool = Field(
        default=False,
        description="Approve this run's blocked cleanup: exactly the projects its plan listed.",
    )
    plan_id: str | None = Field(
        default=None,
        description="With approve: the blocked plan approved (its id is in the cleanup's "
        "metadata and approve link); a plan that changed since is not approved.",
    )
    dry_run: bool = Field(default=False, description="Show what would be removed; change nothing.")
    config_path: str | None = Field(
        default=None,
        description="Ignored: the cleanup applies the policy its run began with (approve, "
        "never loosen).",
    )


def scope_summary(store) -> MetadataValue:
    """The per-scope summary of ``projects`` as table metadata."""
    rows = [
        {k: r[k] for k in ("scope", "total", "missing", "out_of_coverage", "incomplete")}
        for r in store.scope_summary()
    ]
    return tables.capped(rows, tables.SCOPE_SCHEMA, "enum-pipeline runs")["table"]


def resolve_cleanup_run(context, store, given: str | None, *, approve: bool) -> str:
    """The enumeration run a cleanup, approval or restore is about; a Failure names the ones
    that exist when ``given`` is none of them."""
    if given is None:
        newest = next((r for r in store.runs(50) if r.status == "completed"), None)
        if newest is None:
            raise Failure("no completed run to clean up yet: launch enumerate_projects first")
        record = store.cleanup_record(newest.run_id) if approve else None
        if approve and (record is None or record.status != "blocked"):
            raise Failure(
                f"no cleanup is waiting for approval: the newest completed run {newest.run_id} "
                f"has cleanup {record.status if record else 'none'}"
            )
        return newest.run_id
    try:  # the run's id, a unique prefix of it, or a cleanup's or approval's Dagster run id
        return resolve_run(store, given, dagster_run_of=dagster_run_lookup(context.instance))
    except (AmbiguousRunError, UnknownRunError) as err:
        raise Failure(str(err)) from None


def cleanup_entries(store, run_id: str, result) -> list:
    """Per project, what this cleanup did or would do: the plan it made now, or (a cleanup
    already carried out) the plan the store persisted for it."""
    return list(result.entries) or store.cleanup_entries(run_id)


@asset(
    group_name=GROUP,
    kinds=DB_KINDS,
    deps=[AssetKey("projects")],
    pool=CLEANUP_POOL,
    **CATALOG,
)
def stale_projects_cleanup(
    context: AssetExecutionContext, config: CleanupConfig, inventory: InventoryResource
) -> Output[dict]:
    """Remove what a completed, verified run did not see (``safe_cleanup_old_projects``).

    Requested by the ``cleanup_after_confirmed_flush`` sensor, the CLI or an operator: the
    first request claims the flush, any other is a no-op naming it (``claimed_by``). A blocked
    cleanup is recorded with the projects it would remove and its plan id, then its check fails
    the Dagster run on one sentence; the ``approve`` link (first in the metadata) opens
    ``approve_cleanup`` for exactly that plan: Launch Run approves it.
    """
    store = inventory.store()
    run_id = resolve_cleanup_run(context, store, config.run_id, approve=config.approve)
    if context.run.tags.get(ENUMERATION_RUN_TAG) != run_id:
        # So the Runs list filters by it, and restore accepts this Dagster run's id.
        context.instance.add_run_tags(context.run.run_id, {ENUMERATION_RUN_TAG: run_id})
    approver = f"dagster run {context.run.run_id}" if config.approve else None
    if config.approve:
        approve_plan(store, run_id, config.plan_id, approver)
    result = store.safe_cleanup_old_projects(
        run_id,
        dry_run=config.dry_run,
        approved_by=approver,
        witness=inventory.witness(context.log.warning),
        # an approval acts on the claimed, blocked cleanup; every other request claims the flush
        claimant=None if config.approve else cleanup_notice.claimant(context),
    )
    data = result.as_dict()
    held = result.dry_run or result.status == "blocked"
    entries = tables.entry_rows(cleanup_entries(store, run_id, result))
    data["entries"] = entries[: tables.LISTED]
    if result.status == "blocked":
        context.log.error(cleanup_notice.blocked_sentence(data))
    if result.already_done and result.claimed_by:
        context.log.info(result.reason)
    metadata = {}
    if result.status == "blocked":  # first, so the asset's Overview shows it at the top
        link = cleanup_notice.approve_link(run_id, result.plan_id)
        metadata["approve"] = MetadataValue.url(link)
    metadata |= {
        "run_id": run_id,
        "status": result.status,
        "plan_id": result.plan_id or "",
        "claimed_by": result.claimed_by or "",
        "dry_run": result.dry_run,
        "candidates": result.candidates,
        "removed": result.removed,
        "would_remove": result.would_remove,
        "out_of_coverage": result.out_of_coverage,
        "orphaned": result.orphaned,
        "held": result.held,
        "marked_missing": result.marked_missing,
        "kept_incomplete": result.kept_incomplete,
        "unconfirmed": result.unconfirmed,
        "found_present": result.found_present,
        "reason": result.reason or "",
        **tables.table_metadata(
            "projects", entries, tables.CLEANUP_SCHEMA, f"enum-pipeline cleanup {run_id} --dry-run"
        ),
        "scopes": MetadataValue.md(_cleanup_scopes_md(result)),
    }
    if result.status == "done" and not result.dry_run and result.removed:
        # What the restore_projects job can bring back (this cleanup and older ones).
        metadata["restorable"] = tables.restorable_table(store)
    if not held and (result.removed or result.marked_missing):
        context.instance.report_runless_asset_event(
            tables.projects_row_count_event(
                store,
                f"cleanup of run {run_id}: removed {result.removed}",
                enum_pipeline_event="cleanup",
                cleanup_of_run=run_id,
            )
        )
    return Output(data, metadata=metadata)


def approve_plan(store, run_id: str, plan_id: str | None, approver: str) -> None:
    """Approve plan ``plan_id`` of ``run_id``'s blocked cleanup; a Failure, nothing approved,
    when no plan id was given or the plan is another one now."""
    if plan_id is None:
        plan = store.blocked_plan(run_id)
        shown = f"plan {plan.plan_id} of run {run_id}, {plan.would_remove} projects" if plan else ""
        raise Failure(
            f"approve_cleanup approves the plan it was shown, and no plan_id was given ({shown}): "
            "open the approve link of the blocked cleanup (its run page or the asset's metadata) "
            "and launch that; nothing was approved"
        )
    try:
        store.approve_cleanup(run_id, approver, plan_id)
    except StoreError as err:
        raise Failure(str(err)) from None


def _cleanup_scopes_md(result) -> str:
    lines = [
        "| scope | complete | total | candidates | kept (protected) | note |",
        "|---|---|---|---|---|---|",
    ]
    for s in result.scopes:
        note = (s.blocked_reason or s.skipped_reason or "").replace("|", "\\|")
        lines.append(
            f"| {s.scope_key} | {s.complete} | {s.total} | {s.candidates} | {s.protected} "
            f"| {note} |"
        )
    return "\n".join(lines)
