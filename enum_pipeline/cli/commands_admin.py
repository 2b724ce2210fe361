"""``accept``, ``prune-orphans``, ``ui`` and ``db``: looking after the inventory and its home."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from enum_pipeline.cli import home
from enum_pipeline.cli.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK
from enum_pipeline.store import (
    create_inventory_engine,
    current_revision,
    default_database_url,
    head_revision,
    redact_database_url,
    upgrade_schema,
)


def cmd_accept(args) -> int:
    """Accept a scope's changed identity, so its cleanup is no longer held back."""
    store = home._store()
    run_id = home._resolve_run(store, args.run) if args.run else None
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
    result = home._store().prune_orphans(
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


def cmd_ui(args) -> int:
    """The Dagster UI on 127.0.0.1 with ``DAGSTER_HOME`` prepared (``./dagster.yaml`` in force)."""
    dagster_home = home._ensure_dagster_home()
    print(f"DAGSTER_HOME={dagster_home}; UI on http://127.0.0.1:{args.port}", file=sys.stderr)
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster) if dagster.exists() else "dagster", "dev", "-h", "127.0.0.1"]
    workspace = dagster_home / "workspace.yaml"
    workspace.write_text(home.WORKSPACE)
    argv += ["-p", str(args.port), "-w", str(workspace)]
    os.execvpe(argv[0], argv, os.environ)
    return EXIT_FAILED  # not reached


def cmd_db(args) -> int:
    """Apply or show schema migrations."""
    url = default_database_url()
    engine = create_inventory_engine(url)
    home._OPENED.append(engine)
    if args.db_command == "upgrade":
        upgrade_schema(engine)
    print(
        f"{redact_database_url(url)}: at revision {current_revision(engine)} "
        f"(newest {head_revision()})"
    )
    return EXIT_OK
