"""Moved: import from ``enum_pipeline.store`` (this module goes with the next commit)."""

from enum_pipeline.store import *  # noqa: F403
from enum_pipeline.store import __all__  # noqa: F401
