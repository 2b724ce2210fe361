"""Jobs: one enumeration run, and one cleanup run."""

from dagster import (
    AssetSelection,
    Config,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from enum_pipeline.defs.assets import projects, run_state, scanned_projects, stale_projects_cleanup
from enum_pipeline.defs.resources import InventoryResource

# The run queue admits one run per value of this tag (see dagster.yaml); the database enforces
# the single active run anyway, whatever launched it.
INVENTORY_TAG = "enum_pipeline/inventory"

enumerate_projects = define_asset_job(
    "enumerate_projects",
    selection=AssetSelection.assets(scanned_projects, projects, run_state),
    executor_def=in_process_executor,
    tags={INVENTORY_TAG: "default"},
    description="Scan every source, flush and verify, then complete the run.",
)

cleanup_projects = define_asset_job(
    "cleanup_projects",
    selection=AssetSelection.assets(stale_projects_cleanup),
    executor_def=in_process_executor,
    tags={"enum_pipeline/cleanup": "default"},
    description="Remove what a completed, verified run did not see (deletion guard applies).",
)


class RestoreConfig(Config):
    """Run config of ``restore_projects``."""

    run_id: str = Field(description="The run whose cleanup removed the projects to bring back.")


@op
def restore_removed_projects(
    context: OpExecutionContext, config: RestoreConfig, inventory: InventoryResource
) -> list[str]:
    """Bring back every project the cleanup of ``run_id`` removed (those not present again)."""
    keys = inventory.store().restore(config.run_id, restored_by=f"dagster run {context.run.run_id}")
    context.log.info(f"restored {len(keys)} projects removed by the cleanup of {config.run_id}")
    context.add_output_metadata({"restored": len(keys), "run_id": config.run_id})
    return keys


@job(executor_def=in_process_executor, tags={"enum_pipeline/cleanup": "default"})
def restore_projects():
    """Restore what one cleanup removed (launch it with the run id in the launchpad)."""
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
    accepted = inventory.store().accept_scope_identity(
        config.scope_key, config.run_id, accepted_by=f"dagster run {context.run.run_id}"
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


@job(executor_def=in_process_executor, tags={"enum_pipeline/cleanup": "default"})
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


@job(executor_def=in_process_executor, tags={"enum_pipeline/cleanup": "default"})
def prune_orphans():
    """Remove orphaned and out-of-coverage projects (kept by every cleanup) explicitly."""
    prune_orphaned_projects()
