"""The Dagster definitions, one module a concern; ``load_from_defs_folder`` collects them.

The resources every asset uses are bound here, once."""

from dagster import Definitions

from enum_pipeline.defs.notifier import notifier_from_env
from enum_pipeline.defs.resources import InventoryResource

defs = Definitions(resources={"inventory": InventoryResource(), "notifier": notifier_from_env()})
