"""The inventory store: schema, migrations and the run lifecycle (no Dagster here)."""

from enum_pipeline.store import changes as _changes
from enum_pipeline.store.lifecycle import (
    CleanupRefusedError,
    CleanupResult,
    FlushResult,
    FlushVerificationError,
    InventoryStore,
    RunActiveError,
    RunInfo,
    RunNotActiveError,
    StoreError,
    UnknownRunError,
    VerifyResult,
    open_store,
)
from enum_pipeline.store.policy import CleanupPolicy

# The facade's read-only operator views (CONTRACTS.md 5), defined in store/changes.py.
InventoryStore.run_changes = _changes.run_changes
InventoryStore.holder = _changes.holder
InventoryStore.restorable_cleanups = _changes.restorable_cleanups
InventoryStore.cleanup_plan = _changes.cleanup_plan
InventoryStore.scope_summary = _changes.scope_summary
ProjectChange = _changes.ProjectChange

__all__ = [
    "CleanupPolicy",
    "CleanupRefusedError",
    "CleanupResult",
    "FlushResult",
    "FlushVerificationError",
    "InventoryStore",
    "RunActiveError",
    "RunInfo",
    "RunNotActiveError",
    "StoreError",
    "UnknownRunError",
    "VerifyResult",
    "ProjectChange",
    "open_store",
]
