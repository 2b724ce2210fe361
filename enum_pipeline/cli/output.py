"""What the commands print: rows as a table, JSON lines or CSV, a cleanup's summary; and the
way out when stdout's reader went away (``enum-pipeline projects | head -1``)."""

from __future__ import annotations

import json
import logging
import os
import sys

from enum_pipeline.cli.errors import EXIT_FAILED, EXIT_PIPE
from enum_pipeline.output import cell, json_default, write_csv

LISTED = 50  # names printed before "N more"


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


def _print_rows(rows: list[dict], fmt: str, columns, table_columns) -> None:
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


def _exit_now(code: int) -> None:
    """``os._exit(code)`` after flushing logs and standard streams (nothing else is pending: every
    store call commits before it returns and every engine the command opened is disposed)."""
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
