"""Jobs: one enumeration run, and one cleanup run."""

from dagster import (
    AssetSelection,
    Config,
    Failure,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from enum_pipeline.defs import tables
from enum_pipeline.defs.assets import stale_projects_cleanup
from enum_pipeline.defs.constants import (
    APPROVE_JOB,
    CLEANUP_JOB,
    CLEANUP_POOL,
    CLEANUP_TAGS,
    ENUMERATE_JOB,
    RUN_AND_CLEAN_JOB,
    cleanup_run_config,
    dagster_run_lookup,
)
from enum_pipeline.defs.enumeration import enumeration
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import SCOPES
from enum_pipeline.output import wrong_target
from enum_pipeline.steps import resolve_run
from enum_pipeline.store import AmbiguousRunError, UnknownRunError

enumerate_projects = define_asset_job(
    ENUMERATE_JOB,
    selection=AssetSelection.assets(enumeration),
    executor_def=in_process_executor,
    partitions_def=SCOPES,
    description=(
        "Scan the run's scopes (its partitions: one, or a range), flush and verify, then "
        "complete the run (the delta, by project, is in the metadata of projects)."
    ),
)


enumerate_and_clean_up = define_asset_job(
    RUN_AND_CLEAN_JOB,
    selection=AssetSelection.assets(enumeration, stale_projects_cleanup),
    executor_def=in_process_executor,
    partitions_def=SCOPES,
    description=(
        "What enum-pipeline run executes: the enumeration of its scopes, then the cleanup of "
        "its own confirmed flush (run_id: this run's), in one Dagster run. The cleanup claims "
        "the flush as any cleanup does; a blocked one fails its check and this run."
    ),
)


def _cleanup_job(name: str, description: str, config: dict | None = None):
    """A job of the cleanup asset alone, in process, under the cleanup tag."""
    return define_asset_job(
        name,
        selection=AssetSelection.assets(stale_projects_cleanup),
        executor_def=in_process_executor,
        tags=CLEANUP_TAGS,
        config=config,
        description=description,
    )


cleanup_projects = _cleanup_job(
    CLEANUP_JOB,
    "Remove what a completed, verified run did not see (deletion guard applies); a blocked "
    "cleanup fails its check and this run: approve it with approve_cleanup.",
)

approve_cleanup = _cleanup_job(
    APPROVE_JOB,
    "Approve and carry out one blocked cleanup plan: open the approve link of the blocked "
    "cleanup (its run page, the asset's metadata, the notification), which fills in run_id and "
    "plan_id, then Launch Run. Without plan_id nothing is approved: a plan that changed since "
    "it was shown is never approved in its place.",
    config=cleanup_run_config(approve=True),
)


class RestoreConfig(Config):
    """Run config of ``restore_projects``."""

    run_id: str | None = Field(
        default=None,
        description=(
            "The enumeration run whose cleanup removed the projects, or the cleanup's own "
            "Dagster run id. Empty: the newest cleanup with projects to restore (listed in the "
            "metadata of restore_projects' last run and of stale_projects_cleanup)."
        ),
    )


def _restore_target(context, store, given: str) -> str | None:
    """The run or prune id ``given`` names (whole or a unique prefix), or the enumeration run of
    the cleanup whose Dagster run id it is; None when it names nothing (an ambiguous prefix
    fails with the ids it matches)."""
    try:
        return resolve_run(
            store, given, removals=True, dagster_run_of=dagster_run_lookup(context.instance)
        )
    except AmbiguousRunError as err:
        raise Failure(str(err)) from None
    except UnknownRunError:
        return None


@op(pool=CLEANUP_POOL)
def restore_removed_projects(
    context: OpExecutionContext, config: RestoreConfig, inventory: InventoryResource
) -> list[str]:
    """Bring back every project the cleanup of ``run_id`` removed (those not present again)."""
    store = inventory.store()
    restorable = store.restorable_cleanups()
    if config.run_id is None:
        if not restorable:
            raise Failure("nothing to restore: no cleanup has removed projects not restored")
        run_id = restorable[0].run_id
    elif config.run_id in {r.run_id for r in restorable}:
        run_id = config.run_id  # a cleanup's run, or a prune's id
    else:
        run_id = _restore_target(context, store, config.run_id)
        if run_id not in {r.run_id for r in restorable}:
            raise Failure(wrong_target(store, "restore", config.run_id))
    rows = {h.project_key: h for h in store.history(run_id) if h.restored_at is None}
    keys = store.restore(run_id, restored_by=f"dagster run {context.run.run_id}")
    context.log.info(f"restored {len(keys)} projects removed by the cleanup of {run_id}")
    restored = [
        {
            "name": rows[k].row.get("name", k) if k in rows else k,
            "scope": rows[k].scope_key if k in rows else "",
            "location": rows[k].row.get("location", "") if k in rows else "",
            "project_key": k,
        }
        for k in keys
    ]
    context.add_output_metadata(
        {
            "restored": len(keys),
            "run_id": run_id,
            **tables.table_metadata(
                "projects", restored, tables.RESTORE_SCHEMA, f"enum-pipeline history {run_id}"
            ),
            "still_restorable": tables.restorable_table(store),
        }
    )
    context.instance.report_runless_asset_event(
        tables.projects_row_count_event(
            store,
            f"restore of the cleanup of run {run_id}: {len(keys)} back",
            enum_pipeline_event="restore",
            cleanup_of_run=run_id,
        )
    )
    return keys


@job(
    executor_def=in_process_executor,
    tags=CLEANUP_TAGS,
    description=(
        "Restore what one cleanup removed: empty config restores the newest cleanup; run_id "
        "takes the enumeration run's id or the cleanup's Dagster run id."
    ),
)
def restore_projects():
    """Restore what one cleanup removed."""
    restore_removed_projects()


class AcceptIdentityConfig(Config):
    """Run config of ``accept_scope_identity``."""

    scope_key: str = Field(
        description="The scope whose new identity to accept, e.g. fs:/srv/src or "
        "github:github.com:acme (see the held scope in the cleanup's entries)."
    )
    run_id: str | None = Field(
        default=None,
        description="The run whose reading becomes the baseline (default: the newest completed "
        "run that read the scope completely).",
    )


@op
def accept_identity(
    context: OpExecutionContext, config: AcceptIdentityConfig, inventory: InventoryResource
) -> dict:
    """Accept a scope's changed identity (device, real path, owner id, principal), recorded with
    this Dagster run as who accepted it; the next run's cleanup of the scope may proceed."""
    store = inventory.store()
    run_id = store.resolve_run_id(config.run_id) if config.run_id else None  # or its prefix
    accepted = store.accept_scope_identity(
        config.scope_key, run_id, accepted_by=f"dagster run {context.run.run_id}"
    )
    context.log.info(
        f"accepted the identity of {config.scope_key} read by run {accepted['run_id']}: "
        f"{accepted['identity']} (was {accepted['previous_identity']})"
    )
    context.add_output_metadata(
        {
            "scope_key": config.scope_key,
            "run_id": accepted["run_id"],
            "identity": str(accepted["identity"]),
            "previous_identity": str(accepted["previous_identity"]),
        }
    )
    return {k: str(v) if k == "accepted_at" else v for k, v in accepted.items()}


@job(executor_def=in_process_executor, tags=CLEANUP_TAGS)
def accept_scope_identity():
    """Accept the new identity of a scope whose cleanup is held because it changed (a different
    filesystem or real path at a root, another owner id or principal on a code host)."""
    accept_identity()


class PruneOrphansConfig(Config):
    """Run config of ``prune_orphans``."""

    dry_run: bool = Field(default=False, description="List what would be removed; change nothing.")
    approve: bool = Field(
        default=False, description="Remove even when the deletion guard would hold the prune back."
    )
    scope_key: str | None = Field(default=None, description="Prune only this scope's rows.")


@op
def prune_orphaned_projects(
    context: OpExecutionContext, config: PruneOrphansConfig, inventory: InventoryResource
) -> dict:
    """Remove the rows marked orphaned or out of coverage, into history (restorable with the
    prune's id), under the deletion guard."""
    approver = f"dagster run {context.run.run_id}" if config.approve else None
    result = inventory.store().prune_orphans(
        dry_run=config.dry_run, approved_by=approver, scope_key=config.scope_key
    )
    if result.status == "blocked":
        context.log.warning(f"prune held back by the deletion guard: {result.reason}")
    context.add_output_metadata(
        {
            "prune_id": result.run_id,
            "status": result.status,
            "dry_run": result.dry_run,
            "removed": result.removed,
            "would_remove": result.would_remove,
            "reason": result.reason or "",
        }
    )
    return result.as_dict()


@job(executor_def=in_process_executor, tags=CLEANUP_TAGS)
def prune_orphans():
    """Remove orphaned and out-of-coverage projects (kept by every cleanup) explicitly."""
    prune_orphaned_projects()
