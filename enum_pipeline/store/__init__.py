"""The inventory store: schema, migrations and the run lifecycle (no Dagster here)."""

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
    "open_store",
]
