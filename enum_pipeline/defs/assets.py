"""The cleanup of a completed enumeration run (the run's own assets are in ``enumeration``)."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from enum_pipeline.defs import cleanup_notice, tables
from enum_pipeline.defs.catalog import catalog, database_kind
from enum_pipeline.defs.constants import (
    CLEANUP_POOL,
    ENUMERATION_RUN_TAG,
    dagster_run_lookup,
)
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import SCOPES, partition_tags_of
from enum_pipeline.steps import resolve_run
from enum_pipeline.store import AmbiguousRunError, StoreError, UnknownRunError

GROUP = "inventory"
DB_KINDS = {database_kind()}
CATALOG = {"owners": catalog().owners, "tags": catalog().tags}


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
    deps=[AssetKey("projects"), AssetKey("run_state")],  # the cleanup of a run that ended
    pool=CLEANUP_POOL,
    partitions_def=SCOPES,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key="run_io_manager",
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
        link = cleanup_notice.approve_link(
            run_id, result.plan_id, tags=partition_tags_of(context.run.tags)
        )
        data["approve_link"] = link
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
