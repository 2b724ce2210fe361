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

import sys

from enum_pipeline.cli.errors import (
    EXIT_BLOCKED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    UsageError,
)
from enum_pipeline.cli.home import CLI_JOBS, _close_opened, _instance, _job, _store, start_work
from enum_pipeline.cli.output import _exit_now, _quiet_stdout
from enum_pipeline.cli.parser import build_parser
from enum_pipeline.config import ConfigError
from enum_pipeline.store import StoreError

__all__ = [
    "CLI_JOBS",
    "EXIT_BLOCKED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "UsageError",
    "_exit_now",
    "_instance",
    "_job",
    "_main",
    "_store",
    "build_parser",
    "main",
]


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


def _main(argv: list[str] | None) -> int:
    _quiet_dagster_notices()
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # e.g. `enum-pipeline projects | head -1`: stop quietly
        _quiet_stdout()
        return EXIT_PIPE


def _quiet_dagster_notices() -> None:
    """No beta/preview notices of Dagster's own APIs on a user's terminal (the code location
    uses ``backfill_policy`` and partitioned checks on purpose; ``dagster dev`` still shows
    them)."""
    import warnings

    # by message: importing dagster here would cost every read command its start-up
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    if args.command != "run":  # run says when its start-up is over (before its Dagster run)
        start_work()
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
