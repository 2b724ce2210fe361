"""The exit codes of ``enum-pipeline`` and its usage error (see the package's docstring)."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 3
EXIT_PIPE = 141  # stdout's reader went away (128 + SIGPIPE, as a shell reports a killed writer)


class UsageError(Exception):
    """A bad input: one line on stderr, exit 2, nothing begun."""


class _UnknownRun(UsageError):
    """A run id that names no run (as opposed to an ambiguous prefix)."""
