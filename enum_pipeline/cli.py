"""``enum-pipeline``: run an enumeration through Dagster, clean up, approve, restore, migrate.

Exit codes of ``run``: 0 completed (cleanup ran or had nothing to do), 1 the run failed,
2 usage or configuration error (one line, nothing begun) or a run refused because another holds
the inventory, 3 completed but the deletion guard held the cleanup back. Every command: 141 (128 +
SIGPIPE, what a shell shows for a tool its pipe's reader stopped) when its output was cut short by
a closed pipe (``enum-pipeline projects | head -1``), with nothing on stderr.

A run id may be given whole or as a unique prefix of 4 characters or more (the 8 the Dagster UI
shows); ``InventoryStore.resolve_run_id`` decides.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 3
EXIT_PIPE = 141  # stdout's reader went away (128 + SIGPIPE, as a shell reports a killed writer)
LISTED = 50  # names printed before "N more"
# The code location as the UI names it (links in the metadata use this name).
WORKSPACE = """load_from:
  - python_module:
      module_name: enum_pipeline.definitions
      attribute: defs
      location_name: enum_pipeline
"""


class UsageError(Exception):
    """A bad input: one line on stderr, exit 2, nothing begun."""


class _UnknownRun(UsageError):
    """A run id that names no run (as opposed to an ambiguous prefix)."""


class _Parser(argparse.ArgumentParser):
    """Its usage errors are one line on stderr (exit 2), like every other bad input."""

    def error(self, message: str):
        # A validator's sentence already names its option: drop argparse's "argument X: ".
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message)
        self.exit(EXIT_USAGE, f"enum-pipeline: {message} (see {self.prog} --help)\n")


def _whole_number(option: str, low: int, high: int):
    """An argparse ``type`` for ``option``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{option} must be {low} or more (and at most {high}), not {text!r}"
            )
        return value

    return parse


def _output_file(text: str) -> str:
    """An argparse ``type`` for ``--output``: a file in an existing folder, not a folder."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("--output needs a file name, not an empty string")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"--output {text} is a folder; give a file to write")
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"--output {text}: the folder {parent} {what}")
    return str(path)


def _store():
    """The inventory store, or a UsageError naming the database URL (password hidden)."""
    import sqlalchemy as sa

    from enum_pipeline.store import open_store
    from enum_pipeline.store.engine import default_database_url, redact_database_url

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
    from enum_pipeline.store import AmbiguousRunError, UnknownRunError

    try:
        return store.resolve_run_id(given, removals=removals)
    except AmbiguousRunError as err:
        raise UsageError(str(err)) from None
    except UnknownRunError as err:
        unknown = str(err)
    instance = _instance()
    record = instance.get_run_by_id(given)
    if record is not None:
        from enum_pipeline.defs.sensors import enumeration_run_of

        run_id = enumeration_run_of(record)
        if run_id:
            return run_id
    raise _UnknownRun(unknown)


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


_OPENED: list = []  # Dagster instances and stores the command opened, closed before exit


def _project_dagster_yaml() -> Path:
    """``./dagster.yaml`` when present, else the one next to the package (a source checkout)."""
    here = Path("dagster.yaml")
    if here.is_file():
        return here
    shipped = Path(__file__).resolve().parents[1] / "dagster.yaml"
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


# The jobs the CLI executes, and the defs modules that hold their assets and checks.
CLI_JOBS = ("enumerate_projects", "cleanup_projects", "inventory_reports", "restore_projects")


def _job(name: str):
    """The job ``name`` as the code location defines it, built from only the assets, checks and
    jobs of ``enum_pipeline.defs.assets``, ``.checks``, ``.jobs`` and ``.reports`` with the
    resources of ``enum_pipeline.defs`` (not the whole defs folder: no sensors, schedules or
    folder loader, which a one-off run does not use)."""
    return _cli_definitions().resolve_job_def(name)


@functools.cache
def _cli_definitions():
    from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

    from enum_pipeline.defs import assets, checks, jobs, reports
    from enum_pipeline.defs import defs as resources

    modules = [assets, checks, reports]
    defs = Definitions.merge(
        resources,
        Definitions(
            assets=load_assets_from_modules(modules),
            asset_checks=load_asset_checks_from_modules(modules),
            jobs=[getattr(jobs, n, None) or getattr(reports, n) for n in CLI_JOBS],
        ),
    )
    return defs


def _close_opened() -> None:
    while _OPENED:
        _OPENED.pop().dispose()


def _run_config(args, scan: dict | None = None) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    if scan:
        config["ops"] = {"scanned_projects": {"config": scan}}
    return config


def _step_errors(result) -> list[str]:
    return [
        f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    ]


def _print_cleanup(data: dict) -> None:
    dry = data.get("dry_run")
    held = dry or data["status"] == "blocked"
    counts = (
        f"would remove {data.get('would_remove', 0)}, removed 0"
        if held
        else f"removed {data['removed']}"
    )
    kept = ""
    for label, field in (
        ("out of coverage", "out_of_coverage"),
        ("orphaned", "orphaned"),
        ("held by identity", "held"),
        ("because their absence is not confirmed", "unconfirmed"),
        ("because their witness found them", "found_present"),
    ):
        if data.get(field):
            kept += f", kept {label} {data[field]}"
    print(
        f"cleanup: {data['status']}{' (dry run)' if dry else ''} — {counts}, marked missing "
        f"{data['marked_missing']}, kept because incomplete {data['kept_incomplete']}{kept}"
        + (f" ({data['reason']})" if data.get("reason") else "")
    )
    if held:
        for scope in data["scopes"]:
            note = scope["blocked_reason"] or scope["skipped_reason"] or ""
            print(
                f"  {scope['scope_key']}: {scope['total']} projects, {scope['candidates']} not "
                f"seen, {scope['protected']} protected" + (f" — {note}" if note else "")
            )
    entries = data.get("entries") or []
    for entry in entries[:LISTED]:
        print(f"  {entry['action']:<12} {entry['name']}  {entry['location']}  ({entry['reason']})")
    if len(entries) > LISTED:
        print(f"  … {len(entries) - LISTED} more: enum-pipeline cleanup {data['run_id']} --dry-run")


def _cleanup(instance, run_id: str, args, *, approve=False, dry_run=False) -> tuple[int, dict]:
    from enum_pipeline.defs.sensors import cleanup_run_config

    extra = {"approve": approve, "dry_run": dry_run}
    if args.config:
        extra["config_path"] = os.path.abspath(args.config)
    run_config = cleanup_run_config(run_id, **extra)
    run_config["loggers"] = {"console": {"config": {"log_level": args.log_level}}}
    job = _job("cleanup_projects")
    result = job.execute_in_process(
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        tags={"enum_pipeline/enumeration_run": run_id},
    )
    try:
        data = result.output_for_node("stale_projects_cleanup")
    except Exception:  # noqa: BLE001 - the step failed before its output: report its error
        data = None
    if data is None:
        for error in _step_errors(result):
            print(f"cleanup failed: {error}", file=sys.stderr)
        return EXIT_FAILED, {}
    _print_cleanup(data)
    if data["status"] == "blocked":
        print(
            f"the deletion guard held this cleanup back; review it, then approve it with:\n"
            f"  enum-pipeline approve {run_id}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED, data
    return EXIT_OK, data


def _refusal(store) -> str | None:
    """Why a new run would be refused now (who holds the inventory), or None."""
    from datetime import UTC, datetime

    held = store.holder()
    if held is None or held[1] is not None:
        return None
    run, _ = held
    age = (datetime.now(UTC) - run.heartbeat_at).total_seconds()
    timeout = store.heartbeat_timeout.total_seconds()
    return (
        f"run {run.run_id} holds the inventory (pid {run.pid} on {run.host}, since "
        f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC, heartbeat {age:.0f}s ago); wait for it, or "
        f"stop that process and run again: a run whose process is gone is taken over at once, "
        f"a silent one after {timeout:.0f}s"
    )


def _checked_run_inputs(args) -> tuple[dict, object]:
    """The scan's run config and the store, once every input is checked and no run holds the
    inventory; a UsageError (exit 2, nothing begun) otherwise."""
    from enum_pipeline.config import load_config

    if args.root is not None and any(not r.strip() for r in args.root):
        raise UsageError("--root needs a folder, not an empty string")
    roots = [os.path.abspath(os.path.expanduser(r)) for r in args.root or []] or None
    for root in roots or []:
        if not os.path.isdir(root):
            what = "is not a folder" if os.path.exists(root) else "does not exist"
            raise UsageError(f"--root {root} {what}; nothing was begun")
    config_path = os.path.abspath(args.config) if args.config else None
    # Every source is built (and so checked) before anything begins.
    load_config(config_path, roots).build_sources()
    store = _store()
    refusal = _refusal(store)
    if refusal:
        raise UsageError(refusal)
    scan = {}
    if roots:
        scan["roots"] = roots
    if config_path:
        scan["config_path"] = config_path
    return scan, store


def _print_run(store, run_id: str, elapsed: float):
    """The run's one-line summary and its incomplete or protected scopes; its ``RunInfo``, or
    None when the run never began (a UsageError when another run holds the inventory)."""
    from enum_pipeline.store import UnknownRunError

    try:
        info = store.get_run(run_id)
    except UnknownRunError:
        refusal = _refusal(store)
        if refusal:
            raise UsageError(refusal) from None
        return None
    print(
        f"run {run_id} (generation {info.generation}): {info.status} in {elapsed:.1f}s"
        f" — found {info.scanned_count}, added {info.added_count}, changed "
        f"{info.changed_count}, unchanged {info.unchanged_count}"
    )
    for scope in store.scopes(run_id):
        if not scope.complete:
            print(f"  incomplete scope {scope.scope_key}: {scope.reason}")
        elif scope.protected:
            print(f"  protected in {scope.scope_key}: {', '.join(scope.protected)}")
    return info


def cmd_run(args) -> int:
    """One enumeration run through Dagster, then the cleanup the sensor would request."""
    from enum_pipeline.steps import cleanup_due

    scan, store = _checked_run_inputs(args)
    instance = _instance()
    started = time.monotonic()
    job = _job("enumerate_projects")
    result = job.execute_in_process(
        instance=instance, run_config=_run_config(args, scan), raise_on_error=False
    )
    info = _print_run(store, result.run_id, time.monotonic() - started)
    if not result.success or not cleanup_due(store, result.run_id).due:
        for error in _step_errors(result):
            print(f"enum-pipeline: {error}", file=sys.stderr)
        if info is not None and info.error:
            print(f"enum-pipeline: run failed: {info.error}", file=sys.stderr)
        print("nothing was removed from the inventory", file=sys.stderr)
        return EXIT_FAILED
    code = EXIT_OK
    if not args.no_cleanup:
        code, _ = _cleanup(instance, result.run_id, args)
    if not args.no_reports:
        _reports(instance, result.run_id, args)
    return code


def _cleanable(store, given: str) -> str:
    run_id = _resolve_run(store, given)
    info = store.get_run(run_id)
    if info.status != "completed" or not info.flush_succeeded:
        raise UsageError(
            f"run {run_id} is {info.status} (flush verified: {info.flush_succeeded}); only a "
            f"completed, flush-verified run cleans up; {_run_list(store)}"
        )
    return run_id


def _reports(instance, run_id: str, args) -> bool:
    """Materialize the report assets after a completed run (a failure is shown, not fatal)."""
    job = _job("inventory_reports")
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
        raise_on_error=False,
        tags={"enum_pipeline/enumeration_run": run_id},
    )
    if not result.success:
        for error in _step_errors(result):
            print(f"enum-pipeline: report failed: {error}", file=sys.stderr)
    return result.success


def cmd_cleanup(args) -> int:
    """The cleanup of one run (as the sensor requests it), optionally approved or dry."""
    store = _store()
    run_id = _cleanable(store, args.run_id)
    if args.approve:
        _require_blocked(store, run_id)
    code, _ = _cleanup(_instance(), run_id, args, approve=args.approve, dry_run=args.dry_run)
    return code


def _require_blocked(store, run_id: str) -> None:
    record = store.cleanup_record(run_id)
    if record is None or record.status != "blocked":
        raise UsageError(store.wrong_target("approve", run_id))


def cmd_approve(args) -> int:
    """Approve and carry out a cleanup the deletion guard held back."""
    store = _store()
    run_id = _cleanable(store, args.run_id)
    _require_blocked(store, run_id)
    code, _ = _cleanup(_instance(), run_id, args, approve=True)
    return code


def cmd_restore(args) -> int:
    """Bring back the projects a cleanup removed (through the ``restore_projects`` job)."""
    store = _store()
    restorable = {r.run_id for r in store.restorable_cleanups()}
    try:  # a cleanup's run, or a prune's id, with projects to bring back
        run_id = _resolve_run(store, args.run_id, removals=True)
    except _UnknownRun:
        raise UsageError(store.wrong_target("restore", args.run_id)) from None
    if run_id not in restorable:
        raise UsageError(store.wrong_target("restore", run_id))
    job = _job("restore_projects")
    result = job.execute_in_process(
        instance=_instance(),
        run_config={
            "ops": {"restore_removed_projects": {"config": {"run_id": run_id}}},
            "loggers": {"console": {"config": {"log_level": args.log_level}}},
        },
        raise_on_error=False,
    )
    if not result.success:
        for error in _step_errors(result):
            print(f"restore failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    keys = result.output_for_node("restore_removed_projects")
    print(f"restored {len(keys)} projects removed by the cleanup of run {run_id}")
    for key in keys[:LISTED]:
        print(f"  {key}")
    if len(keys) > LISTED:
        print(f"  … {len(keys) - LISTED} more: enum-pipeline history {run_id}")
    return EXIT_OK


#: How many quarantined records ``runs`` shows a run (``--quarantined RUN_ID`` lists all).
QUARANTINE_SHOWN = 3


def cmd_runs(args) -> int:
    """The newest runs of the inventory."""
    store = _store()
    if args.quarantined:
        for q in store.quarantined(_resolve_run(store, args.quarantined)):
            print(f"{q.scope_key}\t{q.project_key}\t{q.reason}")
        return EXIT_OK
    for run in store.runs(args.limit):
        cleanup = store.cleanup_record(run.run_id)
        quarantined = store.quarantined(run.run_id)
        print(
            f"{run.generation:>6} {run.run_id} {run.status:<9} flush_succeeded="
            f"{run.flush_succeeded!s:<5} found={run.scanned_count} removed={run.removed_count}"
            f" cleanup={cleanup.status if cleanup else '-'} quarantined={len(quarantined)}"
            + (f" error={run.error}" if run.error else "")
        )
        for q in quarantined[:QUARANTINE_SHOWN]:
            print(f"  quarantined {q.project_key} — {q.reason}")
        if len(quarantined) > QUARANTINE_SHOWN:
            more = len(quarantined) - QUARANTINE_SHOWN
            print(f"  … {more} more: enum-pipeline runs --quarantined {run.run_id}")
    kept = store.kept_projects()
    if kept:
        orphaned = sum(1 for r in kept if r["orphaned_since"])
        print(
            f"kept out of coverage: {len(kept) - orphaned}, orphaned: {orphaned} "
            "(listed by `enum-pipeline prune-orphans --dry-run`)"
        )
        for row in kept[:20]:
            why = row["orphan_reason"] or f"out of coverage: {row['out_of_coverage_reason']}"
            print(f"  {row['project_key']} — {why}")
    return EXIT_OK


def cmd_accept(args) -> int:
    """Accept a scope's changed identity, so its cleanup is no longer held back."""
    store = _store()
    run_id = _resolve_run(store, args.run) if args.run else None
    accepted = store.accept_scope_identity(
        args.scope_key, run_id, accepted_by=f"cli:{os.environ.get('USER', '?')}"
    )
    print(
        f"accepted the identity of {accepted['scope_key']} read by run {accepted['run_id']}: "
        f"{accepted['identity']} (was {accepted['previous_identity']}); the next run's cleanup "
        "of this scope may proceed"
    )
    return EXIT_OK


def cmd_prune_orphans(args) -> int:
    """Remove orphaned and out-of-coverage projects, under the deletion guard, into history."""
    approver = f"cli:{os.environ.get('USER', '?')}" if args.approve else None
    result = _store().prune_orphans(
        dry_run=args.dry_run, approved_by=approver, scope_key=args.scope
    )
    verb = "removed" if result.status == "done" and not result.dry_run else "would remove"
    count = result.removed if verb == "removed" else result.would_remove
    print(
        f"prune {result.run_id}: {result.status}{' (dry run)' if result.dry_run else ''} — "
        f"{verb} {count}" + (f" ({result.reason})" if result.reason else "")
    )
    for entry in result.entries:
        print(f"  {entry.project_key}  {entry.location} — {entry.reason}")
    if result.removed:
        print(f"restore them with: enum-pipeline restore {result.run_id}")
    if result.status == "blocked":
        print("the deletion guard held the prune back; add --approve to remove", file=sys.stderr)
        return EXIT_BLOCKED
    return EXIT_OK


def cmd_history(args) -> int:
    """Removed projects, as JSON lines."""
    store = _store()
    run_id = _resolve_run(store, args.run_id, removals=True) if args.run_id else None
    for row in store.history(run_id):
        print(json.dumps(row.to_dict(), default=str))
    return EXIT_OK


def cmd_ui(args) -> int:
    """The Dagster UI on 127.0.0.1 with ``DAGSTER_HOME`` prepared (``./dagster.yaml`` in force)."""
    home = _ensure_dagster_home()
    print(f"DAGSTER_HOME={home}; UI on http://127.0.0.1:{args.port}", file=sys.stderr)
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster) if dagster.exists() else "dagster", "dev", "-h", "127.0.0.1"]
    workspace = home / "workspace.yaml"
    workspace.write_text(WORKSPACE)
    argv += ["-p", str(args.port), "-w", str(workspace)]
    os.execvpe(argv[0], argv, os.environ)
    return EXIT_FAILED  # not reached


def cmd_db(args) -> int:
    """Apply or show schema migrations."""
    from enum_pipeline.store.engine import (
        create_inventory_engine,
        current_revision,
        default_database_url,
        head_revision,
        redact_database_url,
        upgrade_schema,
    )

    url = default_database_url()
    engine = create_inventory_engine(url)
    _OPENED.append(engine)
    if args.db_command == "upgrade":
        upgrade_schema(engine)
    print(
        f"{redact_database_url(url)}: at revision {current_revision(engine)} "
        f"(newest {head_revision()})"
    )
    return EXIT_OK


def _filter(args):
    from enum_pipeline.store.query import ProjectFilter

    return ProjectFilter(
        source=args.source,
        scope=args.scope,
        name=args.name,
        archived=args.archived,
        fork=args.fork,
        visibility=args.visibility,
        language=args.language,
        topic=args.topic,
        stale_days=args.stale_days,
        status=args.status,
    )


def _select(args) -> list[dict] | None:
    """The filtered inventory rows, or None after printing a filter error."""
    from enum_pipeline.store.query import FilterError, output_row, select_projects

    try:
        return [output_row(r) for r in select_projects(_store().engine, _filter(args))]
    except FilterError as err:
        print(f"enum-pipeline: {err}", file=sys.stderr)
        return None


def _print_rows(rows: list[dict], fmt: str, columns, table_columns) -> None:
    from enum_pipeline.store.query import cell, json_default, write_csv

    if fmt == "json":
        for row in rows:
            print(json.dumps(row, default=json_default, ensure_ascii=False))
    elif fmt == "csv":
        write_csv(rows, sys.stdout, columns)
    else:
        cells = [[cell(r.get(c)) for c in table_columns] for r in rows]
        widths = [
            min(48, max([len(c)] + [len(row[i]) for row in cells]))
            for i, c in enumerate(table_columns)
        ]
        print("  ".join(c.upper().ljust(w) for c, w in zip(table_columns, widths, strict=True)))
        for row in cells:
            print(
                "  ".join(
                    (v if len(v) <= w else v[: w - 1] + "…").ljust(w)
                    for v, w in zip(row, widths, strict=True)
                ).rstrip()
            )


def cmd_projects(args) -> int:
    """List the inventory, filtered, as a table, JSON lines or CSV."""
    from enum_pipeline.store.query import OUTPUT_COLUMNS, TABLE_COLUMNS

    rows = _select(args)
    if rows is None:
        return EXIT_USAGE
    _print_rows(rows, args.format, OUTPUT_COLUMNS, TABLE_COLUMNS)
    return EXIT_OK


def cmd_export(args) -> int:
    """Write the (filtered) inventory to a CSV or Parquet file."""
    from enum_pipeline.store.query import OUTPUT_COLUMNS, write_csv

    rows = _select(args)
    if rows is None:
        return EXIT_USAGE
    if args.format == "csv":
        try:
            with open(args.output, "w", newline="", encoding="utf-8") as out:
                write_csv(rows, out, OUTPUT_COLUMNS)
        except OSError as err:
            raise UsageError(f"cannot write --output {args.output}: {err.strerror}") from None
    else:
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            print(
                "enum-pipeline: Parquet export needs pandas and pyarrow: "
                "pip install 'enum_pipeline[parquet]'",
                file=sys.stderr,
            )
            return EXIT_USAGE
        from enum_pipeline.reports import inventory_frame, write_parquet

        try:
            write_parquet(inventory_frame(rows), args.output)
        except OSError as err:
            raise UsageError(f"cannot write --output {args.output}: {err}") from None
    print(f"wrote {len(rows)} projects to {args.output}", file=sys.stderr)
    return EXIT_OK


DIFF_COLUMNS = ("change", "name", "scope_key", "fields", "project_key", "run_id")


def cmd_diff(args) -> int:
    """What one run (default: the latest) added, changed (which fields) and removed."""
    store = _store()
    run_id = args.run_id
    if run_id is None:
        latest = store.runs(1)
        if not latest:
            print("enum-pipeline: no run recorded yet", file=sys.stderr)
            return EXIT_USAGE
        run_id = latest[0].run_id
    run_id = _resolve_run(store, run_id)
    rows = [
        {
            "change": c.change,
            "name": c.name,
            "scope_key": c.scope_key,
            "fields": list(c.fields),
            "project_key": c.project_key,
            "run_id": run_id,
        }
        for c in store.run_changes(run_id)
    ]
    _print_rows(rows, args.format, DIFF_COLUMNS, DIFF_COLUMNS[:4])
    return EXIT_OK


def _filter_options(parser: argparse.ArgumentParser) -> None:
    f = parser.add_argument_group("filters")
    f.add_argument("--source", help="source kind: filesystem, github, gitlab, gitea")
    f.add_argument("--scope", help="scope key, e.g. fs:/srv/src or github:github.com/acme")
    f.add_argument("--name", help="project name pattern (shell-style, case-insensitive)")
    f.add_argument(
        "--archived", action=argparse.BooleanOptionalAction, help="archived (or not) only"
    )
    f.add_argument("--fork", action=argparse.BooleanOptionalAction, help="forks (or not) only")
    f.add_argument("--visibility", help="public, internal or private")
    f.add_argument("--language", help="main language, as the code host names it")
    f.add_argument("--topic", help="projects carrying this topic")
    f.add_argument(
        "--stale-days",
        type=_whole_number("--stale-days", 0, 36500),
        metavar="N",
        help="last activity more than N days ago",
    )
    f.add_argument(
        "--status", help="present, missing, out_of_coverage or orphaned (kept rows and why)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``enum-pipeline``."""
    parser = _Parser(prog="enum-pipeline", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--log-level", default="INFO", help="Dagster console log level (INFO shows progress)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one enumeration run, then its cleanup")
    run.add_argument("--config", help="YAML configuration (default: ENUM_PIPELINE_CONFIG)")
    run.add_argument("--root", action="append", help="scan this folder (repeatable)")
    run.add_argument("--no-cleanup", action="store_true", help="skip the cleanup")
    run.add_argument(
        "--no-reports", action="store_true", help="skip the report assets after the run"
    )
    run.set_defaults(func=cmd_run)

    cleanup = sub.add_parser("cleanup", help="clean up after a completed run")
    cleanup.add_argument("run_id")
    cleanup.add_argument("--config")
    cleanup.add_argument("--dry-run", action="store_true", help="show, change nothing")
    cleanup.add_argument("--approve", action="store_true", help="approve a blocked cleanup")
    cleanup.set_defaults(func=cmd_cleanup)

    approve = sub.add_parser("approve", help="approve a cleanup the deletion guard held back")
    approve.add_argument("run_id")
    approve.add_argument("--config")
    approve.set_defaults(func=cmd_approve)

    restore = sub.add_parser("restore", help="restore what the cleanup of RUN_ID removed")
    restore.add_argument("run_id")
    restore.set_defaults(func=cmd_restore)

    runs = sub.add_parser("runs", help="list recent runs")
    runs.add_argument("--limit", type=_whole_number("--limit", 1, 1_000_000), default=20)
    runs.add_argument(
        "--quarantined",
        metavar="RUN_ID",
        help="list every record of RUN_ID that was quarantined, with its reason",
    )
    runs.set_defaults(func=cmd_runs)

    accept = sub.add_parser("accept", help="accept a scope's changed identity (device, owner…)")
    accept.add_argument("scope_key", help="e.g. fs:/srv/src or github:github.com:acme")
    accept.add_argument("--run", help="the run whose reading to accept (default: the newest)")
    accept.set_defaults(func=cmd_accept)

    prune = sub.add_parser("prune-orphans", help="remove orphaned and out-of-coverage projects")
    prune.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    prune.add_argument("--approve", action="store_true", help="remove despite the guard")
    prune.add_argument("--scope", help="only this scope key")
    prune.set_defaults(func=cmd_prune_orphans)

    history = sub.add_parser("history", help="list removed projects (JSON lines)")
    history.add_argument("run_id", nargs="?")
    history.set_defaults(func=cmd_history)

    projects = sub.add_parser("projects", help="list the inventory (filters, table/json/csv)")
    _filter_options(projects)
    projects.add_argument("--format", choices=["table", "json", "csv"], default="table")
    projects.set_defaults(func=cmd_projects)

    export = sub.add_parser("export", help="write the inventory to a CSV or Parquet file")
    _filter_options(export)
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--output", required=True, type=_output_file, help="file to write")
    export.set_defaults(func=cmd_export)

    diff = sub.add_parser("diff", help="what a run added, changed and removed")
    diff.add_argument("run_id", nargs="?", help="default: the latest run")
    diff.add_argument("--format", choices=["table", "json", "csv"], default="table")
    diff.set_defaults(func=cmd_diff)
    ui = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on 127.0.0.1")
    ui.add_argument("--port", type=_whole_number("--port", 1, 65535), default=3000)
    ui.set_defaults(func=cmd_ui)

    db = sub.add_parser("db", help="schema migrations")
    db.add_argument("db_command", choices=["upgrade", "current"])
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``enum-pipeline`` console script.

    Called without ``argv`` (the console script, ``python -m``), it ends the process itself once
    its output is flushed and its connections are closed, skipping the interpreter's teardown
    (garbage collection of Dagster's and SQLAlchemy's module state: ~0.4 s, no effect on data).
    """
    code = _main(argv)
    if argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """``os._exit(code)`` after flushing logs and standard streams (nothing else is pending: every
    store call commits before it returns and every engine the command opened is disposed)."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            _quiet_stdout()
            code = code or EXIT_PIPE
        except (OSError, ValueError):
            code = code or EXIT_FAILED
    os._exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null once its reader went away, so no later flush (the rest of the
    buffer, the interpreter's own at exit) fails or prints "Exception ignored"."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture): nothing to flush into a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: list[str] | None) -> int:
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # e.g. `enum-pipeline projects | head -1`: stop quietly
        _quiet_stdout()
        return EXIT_PIPE


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    from enum_pipeline.config import ConfigError
    from enum_pipeline.store import StoreError

    try:
        return args.func(args)
    except (UsageError, ConfigError) as err:
        print(f"enum-pipeline: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as err:
        print(f"enum-pipeline: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _close_opened()


if __name__ == "__main__":
    sys.exit(main())
