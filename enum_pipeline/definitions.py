"""The Dagster code location: ``enum_pipeline.definitions:defs``.

Everything is loaded from the ``enum_pipeline.defs`` folder (``[tool.dg.project] defs_module``),
so ``dg scaffold defs ...`` adds to it and nothing here needs editing.
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
