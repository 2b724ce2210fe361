"""The inventory store: schema, migrations and the run lifecycle (no Dagster here).

Import from here, never from a submodule outside the store.
"""

from enum_pipeline.store.changes import ProjectChange
from enum_pipeline.store.errors import (
    AmbiguousRunError,
    CleanupRefusedError,
    FlushVerificationError,
    PlanChangedError,
    RunActiveError,
    RunNotActiveError,
    StoreError,
    UnknownRunError,
)
from enum_pipeline.store.inventory import InventoryStore, open_store
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import (
    BlockedPlan,
    CleanupAction,
    CleanupClaim,
    CleanupEntry,
    CleanupRecord,
    CleanupResult,
    CleanupStatus,
    FlushResult,
    QuarantinedRecord,
    RemovedProject,
    RunInfo,
    RunStatus,
    ScopeCleanup,
    ScopeReading,
    VerifyResult,
    utcnow,
)

# isort: split
# What the layers above need besides the lifecycle (issue 20): reads, engine helpers, row shape.
from enum_pipeline.store.changes import CHANGE_KINDS, Restorable
from enum_pipeline.store.engine import (
    create_inventory_engine,
    current_revision,
    default_database_url,
    head_revision,
    redact_database_url,
    upgrade_schema,
)
from enum_pipeline.store.query import (
    OUTPUT_COLUMNS,
    STATUSES,
    FilterError,
    ProjectFilter,
    latest_completed_run,
    output_row,
    project_status,
    select_projects,
)
from enum_pipeline.store.schema import projects as projects_table

__all__ = [
    "AmbiguousRunError",
    "BlockedPlan",
    "CleanupAction",
    "CleanupClaim",
    "CleanupEntry",
    "CleanupPolicy",
    "CleanupRecord",
    "CleanupRefusedError",
    "CleanupResult",
    "CleanupStatus",
    "FlushResult",
    "FlushVerificationError",
    "InventoryStore",
    "PlanChangedError",
    "ProjectChange",
    "QuarantinedRecord",
    "RemovedProject",
    "RunActiveError",
    "RunInfo",
    "RunNotActiveError",
    "RunStatus",
    "ScopeCleanup",
    "ScopeReading",
    "StoreError",
    "UnknownRunError",
    "VerifyResult",
    "open_store",
    "utcnow",
    # issue 20
    "CHANGE_KINDS",
    "OUTPUT_COLUMNS",
    "STATUSES",
    "FilterError",
    "ProjectFilter",
    "Restorable",
    "create_inventory_engine",
    "current_revision",
    "default_database_url",
    "head_revision",
    "latest_completed_run",
    "output_row",
    "project_status",
    "projects_table",
    "redact_database_url",
    "select_projects",
    "upgrade_schema",
]
