"""What a command opens: ``DAGSTER_HOME`` and its Dagster instance, the jobs it executes, the
inventory store, and run ids resolved against both; everything opened is closed before exit.

Dagster (``import dagster`` is ~0.7 s), ``enum_pipeline.defs`` and ``enum_pipeline.instance``
are imported here only, and only when a command needs them: the read commands never do.
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
from pathlib import Path

import sqlalchemy as sa

from enum_pipeline.cli.errors import UsageError, _UnknownRun
from enum_pipeline.steps import resolve_run
from enum_pipeline.store import (
    AmbiguousRunError,
    UnknownRunError,
    default_database_url,
    open_store,
    redact_database_url,
)

# The code location as the UI names it (links in the metadata use this name).
WORKSPACE = """load_from:
  - python_module:
      module_name: enum_pipeline.definitions
      attribute: defs
      location_name: enum_pipeline
"""

# The jobs the CLI executes, and the defs modules that hold their assets and checks.
CLI_JOBS = (
    "enumerate_projects",
    "enumerate_and_clean_up",
    "cleanup_projects",
    "inventory_reports",
    "restore_projects",
)

_OPENED: list = []  # Dagster instances and stores the command opened, closed before exit


def start_work() -> None:
    """The command's start-up is over: the garbage collector, off since the console script
    began (``enum_pipeline.console``), comes back with every object made so far frozen."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _store():
    """The inventory store, or a UsageError naming the database URL (password hidden)."""
    url = default_database_url()
    try:
        shown = redact_database_url(url)
    except sa.exc.ArgumentError:
        raise UsageError(
            "ENUM_PIPELINE_DATABASE_URL is not a database URL "
            "(expected e.g. postgresql+psycopg://user@host/db or sqlite:///path)"
        ) from None
    try:
        store = open_store(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as err:
        raise UsageError(f"ENUM_PIPELINE_DATABASE_URL {shown} is not usable: {err}") from None
    except sa.exc.DBAPIError as err:
        first = str(err.orig or err).strip().splitlines()[0] if str(err.orig or err) else ""
        raise UsageError(f"cannot open the inventory database {shown}: {first}") from None
    _OPENED.append(store)
    return store


def _run_list(store, limit: int = 5) -> str:
    runs = store.runs(limit)
    if not runs:
        return "the inventory has no runs yet"
    return "newest runs: " + ", ".join(f"{r.run_id} ({r.status})" for r in runs)


def _resolve_run(store, given: str, *, removals: bool = False) -> str:
    """The enumeration run id for ``given``: an inventory run id or a unique prefix of one
    (with ``removals`` also a prune's id), or the Dagster run id of a cleanup, approval or
    restore of one. A UsageError names the candidates (ambiguous) or what exists (unknown:
    ``_UnknownRun``)."""
    try:
        return resolve_run(
            store,
            given,
            removals=removals,
            dagster_run_of=lambda run_id: _constants().dagster_run_lookup(_instance())(run_id),
        )
    except AmbiguousRunError as err:
        raise UsageError(str(err)) from None
    except UnknownRunError as err:
        raise _UnknownRun(str(err)) from None


def _ensure_dagster_home() -> Path:
    """``DAGSTER_HOME``, defaulting to ``./.dagster_home`` seeded with ``./dagster.yaml``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path(".dagster_home").resolve())
        os.environ["DAGSTER_HOME"] = home
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        shutil.copyfile(_project_dagster_yaml(), path / "dagster.yaml")
    return path


def _project_dagster_yaml() -> Path:
    """``./dagster.yaml`` when present, else the one next to the package (a source checkout)."""
    here = Path("dagster.yaml")
    if here.is_file():
        return here
    shipped = Path(__file__).resolve().parents[2] / "dagster.yaml"
    if shipped.is_file():
        return shipped
    raise UsageError("no dagster.yaml here; run from the project folder or set DAGSTER_HOME")


def _instance():
    """The Dagster instance of ``DAGSTER_HOME`` (see ``enum_pipeline.instance``)."""
    from enum_pipeline.instance import open_instance

    home = _ensure_dagster_home().expanduser()
    if not home.is_absolute():
        raise UsageError(f"DAGSTER_HOME must be an absolute path, not {str(home)!r}")
    instance = open_instance(str(home))
    _OPENED.append(instance)
    return instance


def _job(name: str):
    """The job ``name`` as the code location defines it, built from only the assets, checks and
    jobs of ``enum_pipeline.defs.enumeration``, ``.assets``, ``.checks``, ``.jobs`` and
    ``.reports`` with the resources and executor of ``enum_pipeline.defs`` (not the whole defs
    folder: no sensors, schedules or folder loader, which a one-off run does not use)."""
    return _cli_definitions().resolve_job_def(name)


@functools.cache
def _cli_definitions():
    from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

    from enum_pipeline.defs import assets, checks, enumeration, jobs, reports
    from enum_pipeline.defs import defs as resources

    modules = [enumeration, assets, checks, reports]
    defs = Definitions.merge(
        resources,
        Definitions(
            assets=load_assets_from_modules(modules),
            asset_checks=load_asset_checks_from_modules(modules),
            jobs=[getattr(jobs, n, None) or getattr(reports, n) for n in CLI_JOBS],
        ),
    )
    return defs


def _constants():
    """``enum_pipeline.defs.constants``: the run tags and run configs (loading it loads
    Dagster, through ``enum_pipeline.defs``)."""
    from enum_pipeline.defs import constants

    return constants


def _scopes():
    """``enum_pipeline.defs.scopes``: the scope partitions (loading it loads Dagster)."""
    from enum_pipeline.defs import scopes

    return scopes


def _enumeration():
    """``enum_pipeline.defs.enumeration``: the enumeration's run config (loads Dagster)."""
    from enum_pipeline.defs import enumeration

    return enumeration


def _close_opened() -> None:
    while _OPENED:
        _OPENED.pop().dispose()
