"""Configuration: a YAML file of sources and cleanup policy, or ``ENUM_PIPELINE_ROOTS``.

Environment:
- ``ENUM_PIPELINE_CONFIG``: path of the YAML file (takes precedence);
- ``ENUM_PIPELINE_ROOTS``: ``os.pathsep``-separated folders scanned when no file is given;
- ``ENUM_PIPELINE_DATABASE_URL``: the inventory database (see ``store.engine``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from enum_pipeline.sources.base import Source
from enum_pipeline.sources.hostconfig import FilesystemPlacement, StrictConfig, placed
from enum_pipeline.sources.kinds import host_config_models
from enum_pipeline.store import CleanupPolicy

CONFIG_ENV = "ENUM_PIPELINE_CONFIG"
ROOTS_ENV = "ENUM_PIPELINE_ROOTS"


class ConfigError(Exception):
    """The configuration is missing or invalid; the message names the key and the file."""


_Strict = StrictConfig


class FilesystemSourceConfig(_Strict):
    """Folders on disk walked for repositories."""

    kind: Literal["filesystem"]
    roots: list[str] = Field(min_length=1)
    skip_names: list[str] | None = None
    follow_symlinks: bool = False
    one_file_system: bool = True
    max_depth: int | None = Field(None, ge=0)
    nested: bool = Field(True, description="Look inside repositories for nested ones.")
    placement: FilesystemPlacement | None = None

    @field_validator("roots")
    @classmethod
    def _no_empty_root(cls, roots: list[str]) -> list[str]:
        if any(not root.strip() for root in roots):
            raise ValueError("a root must be a folder, not an empty string")
        return roots

    @model_validator(mode="after")
    def _one_host_path(self) -> FilesystemSourceConfig:
        if self.placement and self.placement.host_path and len(self.roots) > 1:
            raise ValueError(
                "placement.host_path names the folder of one root: give each root its own source"
            )
        return self

    def build(self) -> list[Source]:
        """One source per root, so roots can be scanned in parallel."""
        from enum_pipeline.sources.filesystem import FilesystemSource

        return placed(
            [
                FilesystemSource(
                    roots=[os.path.abspath(os.path.expanduser(root))],
                    skip_names=self.skip_names,
                    follow_symlinks=self.follow_symlinks,
                    one_file_system=self.one_file_system,
                    max_depth=self.max_depth,
                    nested=self.nested,
                )
                for root in self.roots
            ],
            self.placement,
        )


#: One model a source kind, told apart by ``kind``: the filesystem, and every code host the
#: ``sources`` package declares (``sources.kinds``).
SourceConfig = Annotated[
    Union[(FilesystemSourceConfig, *host_config_models())],  # noqa: UP007 - built at run time
    Field(discriminator="kind"),
]


class CatalogConfig(_Strict):
    """How the assets show in Dagster's catalog, and where the export asset writes."""

    owners: list[str] = Field(
        default_factory=list, description="Asset owners: e-mail addresses or 'team:<name>'."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every asset.")
    export_path: str | None = Field(None, description="File the inventory_export asset writes.")
    export_format: Literal["csv", "parquet"] = "csv"

    @field_validator("owners")
    @classmethod
    def _owners(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not (owner.startswith("team:") and len(owner) > 5) and "@" not in owner:
                raise ValueError(f"owner {owner!r} is neither an e-mail address nor team:<name>")
        return owners


class NotifyConfig(_Strict):
    """When trouble that waits for an operator becomes a notification (see defs/notify.py)."""

    stuck_after_runs: int = Field(
        3,
        ge=1,
        le=10_000,
        description="Notify once when a scope stays incomplete or held for more than this "
        "many completed runs in a row.",
    )


class PipelineConfig(_Strict):
    """The whole configuration file."""

    sources: list[SourceConfig] = Field(min_length=1)
    catalog: CatalogConfig = CatalogConfig()
    cleanup: CleanupPolicy = CleanupPolicy()
    notify: NotifyConfig = NotifyConfig()
    batch_size: int = Field(1000, ge=1, le=100_000)
    parallel_sources: int = Field(
        1,
        ge=1,
        le=64,
        description="Sources (and filesystem roots) scanned at the same time within one run "
        "(a grouped schedule run reads its scopes with this many threads).",
    )
    scopes_per_run: int = Field(
        1,
        ge=1,
        le=1000,
        description="Scopes the schedule puts in one run: up to this many of one source kind, "
        "host and token and placement whose partitions are contiguous (a range). Each queued "
        "run is a process of its own (a few seconds to start): set it, with parallel_sources, "
        "for many short scopes on one machine.",
    )

    _origin: str = PrivateAttr("the configuration")

    def build_sources(self) -> list[Source]:
        """Instantiate every configured source; a value a source refuses is a ConfigError
        naming the source's key and the file."""
        sources: list[Source] = []
        for index, config in enumerate(self.sources):
            try:
                sources.extend(config.build())
            except ValueError as err:
                raise ConfigError(
                    f"invalid configuration in {self._origin}: sources.{index}.{config.kind}: {err}"
                ) from None
        return sources

    def sources_for(self, scope_keys: Iterable[str]) -> list[Source]:
        """The sources of the scopes ``scope_keys`` only (see ``narrow``)."""
        return self.narrow(self.build_sources(), scope_keys)

    def narrow(self, sources: list[Source], scope_keys: Iterable[str]) -> list[Source]:
        """Of this configuration's built ``sources``, those reading ``scope_keys`` (a filesystem
        source is built one per root, so it is narrowed to those roots); a key the configuration
        does not read is a ConfigError, raised before any source is used."""
        wanted = set(scope_keys)
        known = {k for s in sources for k in s.scope_keys()}
        unknown = sorted(wanted - known)
        if unknown:
            listed = ", ".join(sorted(known)[:5]) + (", …" if len(known) > 5 else "")
            raise ConfigError(
                f"scope {unknown[0]} is not in {self._origin} (it reads {listed}); "
                "nothing was begun"
            )
        return [s for s in sources if wanted & set(s.scope_keys())]


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        lines.append(f"{loc or '(top level)'}: {e['msg']}")
    return f"invalid configuration in {origin}: " + "; ".join(lines)


def parse_config(data: object, origin: str) -> PipelineConfig:
    """Validate already-parsed data; errors name each bad key and ``origin``."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {origin}: the top level must be a mapping")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None
    config._origin = origin
    return config


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what the YAML error is, without the snippet of the line (it may hold a secret)."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or type(err).__name__
    return f"{where}: {problem}"


def load_config_file(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"cannot read configuration file {path}: not UTF-8 text (byte {err.start})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {path}{_yaml_problem(err)}") from None
    return parse_config(data, str(path))


def load_config(config_path: str | None = None, roots: list[str] | None = None) -> PipelineConfig:
    """The configuration from explicit arguments, else ``ENUM_PIPELINE_CONFIG``, else roots."""
    if roots:
        return parse_config({"sources": [{"kind": "filesystem", "roots": roots}]}, "--root")
    config_path = config_path or os.environ.get(CONFIG_ENV)
    if config_path:
        return load_config_file(config_path)
    env_roots = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r.strip()]
    if env_roots:
        return parse_config({"sources": [{"kind": "filesystem", "roots": env_roots}]}, ROOTS_ENV)
    raise ConfigError(
        f"no sources configured: set {CONFIG_ENV} to a YAML file or {ROOTS_ENV} to the folders "
        "to scan (e.g. ENUM_PIPELINE_ROOTS=~/src)"
    )
