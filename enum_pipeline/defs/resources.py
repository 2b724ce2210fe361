"""The store as a Dagster resource."""

import threading
from collections.abc import Callable
from datetime import timedelta

from dagster import ConfigurableResource
from pydantic import Field

from enum_pipeline.config import ConfigError, PipelineConfig, load_config
from enum_pipeline.sources.witness import SourceWitness
from enum_pipeline.store import InventoryStore, default_database_url, redact_database_url

_stores: dict[tuple[str, float], InventoryStore] = {}

_lock = threading.Lock()


class InventoryResource(ConfigurableResource):
    """The inventory database and the pipeline configuration.

    Unset fields fall back to ``ENUM_PIPELINE_DATABASE_URL`` / ``ENUM_PIPELINE_CONFIG`` /
    ``ENUM_PIPELINE_ROOTS`` at run time (pass ``EnvVar(...)`` to pin them in Definitions).
    """

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default ENUM_PIPELINE_DATABASE_URL or SQLite."
    )
    config_path: str | None = Field(
        default=None, description="YAML file of sources and cleanup policy."
    )
    heartbeat_timeout_seconds: float = Field(
        default=900, gt=0, description="An active run silent this long is abandoned."
    )

    def url(self) -> str:
        """The database URL in effect."""
        return self.database_url or default_database_url()

    def display_url(self) -> str:
        """The database URL with any password hidden."""
        return redact_database_url(self.url())

    def pipeline_config(
        self, config_path: str | None = None, roots: list[str] | None = None
    ) -> PipelineConfig:
        """The configuration: run-config overrides first, then this resource, then env."""
        return load_config(config_path or self.config_path, roots)

    def witness(self, log: Callable[[str], None] | None = None) -> SourceWitness:
        """The sources' second witness for a cleanup: each configured source looks at its own
        candidates (a filesystem checkout needs no configuration). A configuration that cannot
        be read leaves the code-host scopes without a witness, so they keep their rows."""
        try:
            sources = self.pipeline_config().build_sources()
        except ConfigError as err:
            if log is not None:
                log(f"no code-host witness for this cleanup (their rows are kept): {err}")
            sources = []
        return SourceWitness(sources)

    def store(self) -> InventoryStore:
        """A store shared by every step of this process (one engine per URL)."""
        key = (self.url(), self.heartbeat_timeout_seconds)
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = InventoryStore(key[0], heartbeat_timeout=timedelta(seconds=key[1]))
                _stores[key] = store
            return store
