"""``python -m enum_pipeline.cli``: the ``enum-pipeline`` console script."""

import sys

from enum_pipeline.cli import main

sys.exit(main())
