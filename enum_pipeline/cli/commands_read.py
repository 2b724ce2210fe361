"""``projects``, ``export``, ``diff``, ``runs`` and ``history``: the commands that read the
inventory only (no Dagster; pandas only for a Parquet export)."""

from __future__ import annotations

import json
import sys

from enum_pipeline.cli import home
from enum_pipeline.cli.errors import EXIT_OK, EXIT_USAGE, UsageError
from enum_pipeline.cli.output import _print_rows
from enum_pipeline.output import TABLE_COLUMNS, write_csv
from enum_pipeline.reports import inventory_frame, write_parquet
from enum_pipeline.store import (
    OUTPUT_COLUMNS,
    FilterError,
    ProjectFilter,
    output_row,
    select_projects,
)

#: How many quarantined records ``runs`` shows a run (``--quarantined RUN_ID`` lists all).
QUARANTINE_SHOWN = 3


def cmd_runs(args) -> int:
    """The newest runs of the inventory."""
    store = home._store()
    if args.quarantined:
        for q in store.quarantined(home._resolve_run(store, args.quarantined)):
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


def cmd_history(args) -> int:
    """Removed projects, as JSON lines."""
    store = home._store()
    run_id = home._resolve_run(store, args.run_id, removals=True) if args.run_id else None
    for row in store.history(run_id):
        print(json.dumps(row.to_dict(), default=str))
    return EXIT_OK


def _filter(args):
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
    try:
        return [output_row(r) for r in select_projects(home._store().engine, _filter(args))]
    except FilterError as err:
        print(f"enum-pipeline: {err}", file=sys.stderr)
        return None


def cmd_projects(args) -> int:
    """List the inventory, filtered, as a table, JSON lines or CSV."""
    rows = _select(args)
    if rows is None:
        return EXIT_USAGE
    _print_rows(rows, args.format, OUTPUT_COLUMNS, TABLE_COLUMNS)
    return EXIT_OK


def cmd_export(args) -> int:
    """Write the (filtered) inventory to a CSV or Parquet file."""
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
        if not _parquet_installed():
            print(
                "enum-pipeline: Parquet export needs pandas and pyarrow: "
                "pip install 'enum_pipeline[parquet]'",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            write_parquet(inventory_frame(rows), args.output)
        except OSError as err:
            raise UsageError(f"cannot write --output {args.output}: {err}") from None
    print(f"wrote {len(rows)} projects to {args.output}", file=sys.stderr)
    return EXIT_OK


def _parquet_installed() -> bool:
    """Whether pandas and pyarrow (the ``parquet`` extra) can be imported; imports both, so only
    a Parquet export calls it."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


DIFF_COLUMNS = ("change", "name", "scope_key", "fields", "project_key", "run_id")


def cmd_diff(args) -> int:
    """What one run (default: the latest) added, changed (which fields) and removed."""
    store = home._store()
    run_id = args.run_id
    if run_id is None:
        latest = store.runs(1)
        if not latest:
            print("enum-pipeline: no run recorded yet", file=sys.stderr)
            return EXIT_USAGE
        run_id = latest[0].run_id
    run_id = home._resolve_run(store, run_id)
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
