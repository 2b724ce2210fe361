"""The Dagster definitions, one module a concern; ``load_from_defs_folder`` collects them.

The resources every asset uses, and the executor of every job that names none (the implicit
asset job behind the UI's Materialize buttons and backfills too), are set here, once: the
enumeration's steps must share the process that holds its run."""

from dagster import Definitions, in_process_executor

from enum_pipeline.defs.notifier import notifier_from_env
from enum_pipeline.defs.resources import InventoryResource, RunScopedIOManager

defs = Definitions(
    resources={
        "inventory": InventoryResource(),
        "run_io_manager": RunScopedIOManager(),
        "notifier": notifier_from_env(),
    },
    executor=in_process_executor,
)
