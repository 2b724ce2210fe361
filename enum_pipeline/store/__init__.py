"""The inventory store: schema, migrations and the run lifecycle (no Dagster here).

Import from here, never from a submodule outside the store.
"""

from enum_pipeline.store.changes import ProjectChange
from enum_pipeline.store.errors import (
    CleanupRefusedError,
    FlushVerificationError,
    RunActiveError,
    RunNotActiveError,
    StoreError,
    UnknownRunError,
)
from enum_pipeline.store.inventory import InventoryStore, open_store
from enum_pipeline.store.policy import CleanupPolicy
from enum_pipeline.store.records import (
    CleanupAction,
    CleanupEntry,
    CleanupResult,
    CleanupStatus,
    FlushResult,
    RunInfo,
    RunStatus,
    ScopeCleanup,
    VerifyResult,
    utcnow,
)

__all__ = [
    "CleanupAction",
    "CleanupEntry",
    "CleanupPolicy",
    "CleanupRefusedError",
    "CleanupResult",
    "CleanupStatus",
    "FlushResult",
    "FlushVerificationError",
    "InventoryStore",
    "ProjectChange",
    "RunActiveError",
    "RunInfo",
    "RunNotActiveError",
    "RunStatus",
    "ScopeCleanup",
    "StoreError",
    "UnknownRunError",
    "VerifyResult",
    "open_store",
    "utcnow",
]
