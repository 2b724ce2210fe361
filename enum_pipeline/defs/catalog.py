"""What the catalog shows, decided when the code location loads: owners and tags from the
configuration's ``catalog`` section, kinds from the database URL and the configured sources, and
a freshness policy that follows the enumeration schedule."""

from __future__ import annotations

import functools
import os
from datetime import timedelta

from dagster import FreshnessPolicy

from enum_pipeline.config import CONFIG_ENV, CatalogConfig, ConfigError, load_config_file
from enum_pipeline.defs.constants import schedule_cron
from enum_pipeline.store import default_database_url


@functools.cache
def _loaded():
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    try:
        return load_config_file(path)
    except ConfigError:
        return None  # a bad file is reported when a run reads it; the catalog falls back


def catalog() -> CatalogConfig:
    """The configured ``catalog`` section (defaults when there is no readable file)."""
    config = _loaded()
    return config.catalog if config is not None else CatalogConfig()


def database_kind() -> str:
    """``postgres`` or ``sqlite``: the backend of the configured database URL."""
    return "postgres" if default_database_url().startswith("postgresql") else "sqlite"


def source_kinds() -> set[str]:
    """``python`` plus the configured code hosts (Dagster shows at most three kinds)."""
    config = _loaded()
    hosts = sorted({s.kind for s in config.sources if s.kind != "filesystem"}) if config else []
    return {"python", *hosts[:2]}


def freshness() -> FreshnessPolicy:
    """Fresh when a run has completed since the schedule's last tick, with an hour's grace."""
    return FreshnessPolicy.cron(deadline_cron=schedule_cron(), lower_bound_delta=timedelta(hours=1))
