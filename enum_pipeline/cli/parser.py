"""The argument parser of ``enum-pipeline`` and the validators of its option values."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from enum_pipeline.cli.commands_admin import cmd_accept, cmd_db, cmd_prune_orphans, cmd_ui
from enum_pipeline.cli.commands_read import (
    cmd_diff,
    cmd_export,
    cmd_history,
    cmd_projects,
    cmd_runs,
)
from enum_pipeline.cli.commands_run import cmd_approve, cmd_cleanup, cmd_restore, cmd_run
from enum_pipeline.cli.errors import EXIT_USAGE
from enum_pipeline.sources.kinds import kind_names

DESCRIPTION = (
    "``enum-pipeline``: run an enumeration through Dagster, clean up, approve, restore, migrate."
)


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


def _filter_options(parser: argparse.ArgumentParser) -> None:
    f = parser.add_argument_group("filters")
    f.add_argument("--source", help="source kind: " + ", ".join(kind_names()))
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
    parser = _Parser(prog="enum-pipeline", description=DESCRIPTION)
    parser.add_argument(
        "--log-level", default="INFO", help="Dagster console log level (INFO shows progress)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one enumeration run, then its cleanup")
    run.add_argument("--config", help="YAML configuration (default: ENUM_PIPELINE_CONFIG)")
    run.add_argument("--root", action="append", help="scan this folder (repeatable)")
    run.add_argument("--no-cleanup", action="store_true", help="skip the cleanup")
    reports = run.add_mutually_exclusive_group()
    reports.add_argument(
        "--reports",
        action="store_true",
        help="materialize the report assets in this process after the run (default: only when "
        "catalog.export_path is set; otherwise the daemon's sensor reports_after_enumeration "
        "makes them)",
    )
    reports.add_argument(
        "--no-reports", action="store_true", help="never materialize the report assets here"
    )
    run.set_defaults(func=cmd_run)

    cleanup = sub.add_parser("cleanup", help="clean up after a completed run")
    cleanup.add_argument("run_id")
    cleanup.add_argument("--config")
    cleanup.add_argument("--dry-run", action="store_true", help="show, change nothing")
    cleanup.add_argument("--approve", action="store_true", help="approve a blocked cleanup")
    cleanup.add_argument(
        "--plan", help="with --approve: the plan id shown with the blocked cleanup"
    )
    cleanup.set_defaults(func=cmd_cleanup)

    approve = sub.add_parser("approve", help="approve a cleanup the deletion guard held back")
    approve.add_argument("run_id")
    approve.add_argument(
        "--plan",
        help="the plan id shown with the blocked cleanup: approve that plan or nothing (default: "
        "the run's blocked plan as it is now)",
    )
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
