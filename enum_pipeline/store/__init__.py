"""The inventory store: schema, migrations and the run lifecycle (no Dagster here).

Import from here, never from a submodule outside the store.
"""

from enum_pipeline.store.changes import ProjectChange
from enum_pipeline.store.engine import (
    create_inventory_engine,
    current_revision,
    default_database_url,
    head_revision,
    redact_database_url,
    upgrade_schema,
)
from enum_pipeline.store.errors import (
    AmbiguousRunError,
    CleanupRefusedError,
    FlushVerificationError,
    RunActiveError,
    RunNotActiveError,
    StoreError,
    UnknownRunError,
)
from enum_pipeline.store.inventory import InventoryStore, open_store
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.query import (
    OUTPUT_COLUMNS,
    TABLE_COLUMNS,
    FilterError,
    ProjectFilter,
    cell,
    json_default,
    output_row,
    select_projects,
    write_csv,
)
from enum_pipeline.store.records import (
    CleanupAction,
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

__all__ = [
    "AmbiguousRunError",
    "CleanupAction",
    "CleanupEntry",
    "CleanupPolicy",
    "CleanupRecord",
    "CleanupRefusedError",
    "CleanupResult",
    "CleanupStatus",
    "FlushResult",
    "FlushVerificationError",
    "InventoryStore",
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
    # The command line's reads: the database URL, migrations, filtered listings and output.
    "FilterError",
    "OUTPUT_COLUMNS",
    "ProjectFilter",
    "TABLE_COLUMNS",
    "cell",
    "create_inventory_engine",
    "current_revision",
    "default_database_url",
    "head_revision",
    "json_default",
    "output_row",
    "redact_database_url",
    "select_projects",
    "upgrade_schema",
    "write_csv",
]
