"""The ``enum-pipeline`` console script: its start-up runs without the cyclic garbage collector.

Loading the CLI, Dagster, the definitions and the instance makes a few hundred thousand objects
and next to no garbage, yet the collector scans them again every 700 allocations. It is off
until the command starts its work, then back on with everything made so far frozen (never
scanned again): ``enum_pipeline.cli.home.start_work``. ``python -m enum_pipeline.cli`` and
importing ``enum_pipeline.cli`` leave the collector alone.
"""

import gc


def main() -> int:
    """Entry point of the ``enum-pipeline`` console script."""
    gc.disable()
    from enum_pipeline.cli import main as cli_main

    return cli_main()
