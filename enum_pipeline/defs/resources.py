"""The store as a Dagster resource."""

import pickle
import threading
from collections.abc import Callable
from datetime import timedelta

from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    InitResourceContext,
    InputContext,
    OutputContext,
    UPathIOManager,
)
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
            return SourceWitness(self.pipeline_config().build_sources())
        except ConfigError as err:  # said (once) when a code-host row asks for its witness
            return SourceWitness(config_error=str(err), warn=log)

    def store(self) -> InventoryStore:
        """A store shared by every step of this process (one engine per URL)."""
        key = (self.url(), self.heartbeat_timeout_seconds)
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = InventoryStore(key[0], heartbeat_timeout=timedelta(seconds=key[1]))
                _stores[key] = store
            return store


class RunScopedPickleIOManager(UPathIOManager):
    """Pickles every output under its run and step (``<run>/<step>/<output>``), whatever
    partitions it materializes: one value for a partition range too (where the default I/O
    manager refuses a range), and a partition key such as ``fs:/srv`` is no path."""

    def dump_to_path(self, context: OutputContext, obj, path) -> None:
        with path.open("wb") as file:
            pickle.dump(obj, file)

    def load_from_path(self, context: InputContext, path):
        with path.open("rb") as file:
            return pickle.load(file)

    def _run_path(self, context: InputContext | OutputContext):
        return self._with_extension(self._base_path.joinpath(*context.get_identifier()))

    def handle_output(self, context: OutputContext, obj) -> None:
        path = self._run_path(context)
        self.make_directory(path.parent)
        self.dump_to_path(context=context, obj=obj, path=path)

    def load_input(self, context: InputContext):
        return self.load_from_path(context=context, path=self._run_path(context))


class RunScopedIOManager(ConfigurableIOManagerFactory[RunScopedPickleIOManager]):
    """``RunScopedPickleIOManager`` under the instance's storage folder (or ``base_dir``): the
    I/O manager of the partitioned cleanup, whose value only its own run's check reads."""

    base_dir: str | None = Field(default=None, description="Default: the instance's storage.")

    def create_io_manager(self, context: InitResourceContext) -> RunScopedPickleIOManager:
        from upath import UPath

        base = self.base_dir or context.instance.storage_directory()
        return RunScopedPickleIOManager(base_path=UPath(base))
