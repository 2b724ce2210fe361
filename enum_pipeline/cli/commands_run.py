"""``run``, ``cleanup``, ``approve`` and ``restore``: the commands that execute a Dagster job."""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime

from enum_pipeline.cli import home
from enum_pipeline.cli.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, UsageError, _UnknownRun
from enum_pipeline.cli.output import LISTED, _print_cleanup
from enum_pipeline.config import PipelineConfig, load_config
from enum_pipeline.output import wrong_target
from enum_pipeline.steps import cleanup_due
from enum_pipeline.store import UnknownRunError


def _run_config(args, scan: dict | None = None) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    if scan:
        config.update(home._enumeration().scan_run_config(scan))
    return config


def _one_run_over(instance, scope_keys: list[str], *, ad_hoc: bool) -> dict[str, str]:
    """Make the run's scopes partitions; the partition tags of ONE run over all of them.

    A configured run first syncs the partitions with its configuration as the sensor
    ``sync_scope_partitions`` does (adds its scopes, deletes the others: never a project), so
    its keys are all the partitions, one range. An ad hoc ``--root`` run only adds its keys.
    Dagster's range spans every partition from its first to its last key in the order they
    were added: when the run's keys are not contiguous in that order (one was added earlier,
    others since), another scope inside the range would be read too, or fail the run before it
    begins when its configuration lacks it; so those keys are deleted and added again, together
    at the end (a partition's materializations stay in the event log).
    """
    scopes = home._scopes()
    name = home._constants().SCOPES_PARTITIONS
    keys = scopes.partition_keys(scope_keys)
    current = instance.get_dynamic_partitions(name)
    if not ad_hoc:
        _, stale = scopes.sync_plan(current, keys)
        for key in stale:
            instance.delete_dynamic_partition(name, key)
        current = [k for k in current if k not in stale]
    wanted = set(keys)
    present = [k for k in current if k in wanted]
    missing = [k for k in keys if k not in set(present)]
    start = current.index(present[0]) if present else 0
    block = current[start : start + len(present)]
    at_end = start + len(present) == len(current)
    if present and (block != present or (missing and not at_end)):
        for key in present:
            instance.delete_dynamic_partition(name, key)
        missing = keys
    instance.add_dynamic_partitions(name, missing)
    ordered = [k for k in instance.get_dynamic_partitions(name) if k in set(keys)]
    return scopes.run_partition_tags(ordered)


def _partition_tags_of_run(instance, store, run_id: str) -> dict[str, str]:
    """The partition tags of enumeration run ``run_id`` (for its cleanup): its Dagster run's,
    else (a run this instance did not launch) those of the scopes it read, added if missing."""
    scopes = home._scopes()
    record = instance.get_run_by_id(run_id)
    tags = scopes.partition_tags_of(record.tags) if record is not None else {}
    keys = list(tags.values()) or scopes.partition_keys(s.scope_key for s in store.scopes(run_id))
    name = home._constants().SCOPES_PARTITIONS
    instance.add_dynamic_partitions(
        name, [k for k in keys if not instance.has_dynamic_partition(name, k)]
    )
    if tags:
        return tags
    ordered = [k for k in instance.get_dynamic_partitions(name) if k in set(keys)]
    return scopes.run_partition_tags(ordered)


def _step_errors(result) -> list[str]:
    return [
        f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    ]


def _cleanup(
    instance, store, run_id: str, args, *, approve=False, dry_run=False, plan_id=None
) -> tuple[int, dict]:
    """The cleanup of ``run_id`` as its own Dagster run (``cleanup``, ``approve``)."""
    from enum_pipeline.defs.cleanup_notice import REQUESTED_BY_TAG

    extra = {"approve": approve, "dry_run": dry_run}
    if approve:
        extra["plan_id"] = plan_id
    if args.config:
        extra["config_path"] = os.path.abspath(args.config)
    run_config = home._constants().cleanup_run_config(run_id, **extra)
    run_config["loggers"] = {"console": {"config": {"log_level": args.log_level}}}
    job = home._job("cleanup_projects")
    result = job.execute_in_process(
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        tags={
            home._constants().ENUMERATION_RUN_TAG: run_id,
            **_partition_tags_of_run(instance, store, run_id),
            REQUESTED_BY_TAG: f"enum-pipeline {args.command}",
        },
    )
    return _cleanup_outcome(result, run_id)


def _cleanup_outcome(result, run_id: str) -> tuple[int, dict]:
    """Print what the cleanup step of Dagster run ``result`` did; its exit code and data."""
    try:
        data = result.output_for_node("stale_projects_cleanup")
    except Exception:  # noqa: BLE001 - the step failed before its output: report its error
        data = None
    if data is None:
        for error in _step_errors(result):
            print(f"cleanup failed: {error}", file=sys.stderr)
        return EXIT_FAILED, {}
    _print_cleanup(data)
    if data.get("already_done") and data.get("claimed_by"):
        print(data["reason"])  # the flush's cleanup is another requester's: say whose
    if data["status"] == "blocked":
        print(
            f"the deletion guard held this cleanup back; review it, then approve it with:\n"
            f"  enum-pipeline approve {run_id} --plan {data['plan_id']}",
            file=sys.stderr,
        )
        return EXIT_BLOCKED, data
    return EXIT_OK, data


def _refusal(store, scopes: list[str] | None) -> str | None:
    """Why a new run over ``scopes`` would be refused now (which live run reads which of its
    scopes), or None."""
    held = store.holder(scopes)
    if held is None or held.takeover is not None:
        return None
    run = held.run
    age = (datetime.now(UTC) - run.heartbeat_at).total_seconds()
    timeout = store.heartbeat_timeout.total_seconds()
    return (
        f"{held.scope} is being read by run {run.run_id} (pid {run.pid} on {run.host}, since "
        f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC, heartbeat {age:.0f}s ago); wait for it, or "
        f"stop that process and run again: a run whose process is gone is taken over at once, "
        f"a silent one after {timeout:.0f}s"
    )


def _checked_run_inputs(args) -> tuple[dict, object, list[str], PipelineConfig]:
    """The scan's run config, the store, the scope keys the run reads and the configuration,
    once every input is checked and no live run reads one of those scopes; a UsageError (exit
    2, nothing begun) otherwise."""
    if args.root is not None and any(not r.strip() for r in args.root):
        raise UsageError("--root needs a folder, not an empty string")
    roots = [os.path.abspath(os.path.expanduser(r)) for r in args.root or []] or None
    for root in roots or []:
        if not os.path.isdir(root):
            what = "is not a folder" if os.path.exists(root) else "does not exist"
            raise UsageError(f"--root {root} {what}; nothing was begun")
    config_path = os.path.abspath(args.config) if args.config else None
    # Every source is built (and so checked) before anything begins.
    pipeline = load_config(config_path, roots)
    sources = pipeline.build_sources()
    scopes = [k for source in sources for k in source.scope_keys()]
    store = home._store()
    refusal = _refusal(store, scopes)
    if refusal:
        raise UsageError(refusal)
    scan = {}
    if roots:
        scan["roots"] = roots
    if config_path:
        scan["config_path"] = config_path
    return scan, store, scopes, pipeline


def _print_run(store, run_id: str, elapsed: float, scopes: list[str]):
    """The run's one-line summary and its incomplete or protected scopes; its ``RunInfo``, or
    None when the run never began (a UsageError when a live run reads one of ``scopes``)."""
    try:
        info = store.get_run(run_id)
    except UnknownRunError:
        refusal = _refusal(store, scopes)
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
    """One enumeration run of every scope through Dagster (one run over their partitions, see
    ``_one_run_over``), and the cleanup of its flush in the same Dagster run
    (``enumerate_and_clean_up``; ``--no-cleanup``: ``enumerate_projects`` alone)."""
    from enum_pipeline.defs.cleanup_notice import REQUESTED_BY_TAG

    scan, store, scopes, pipeline = _checked_run_inputs(args)
    instance = home._instance()
    started = time.monotonic()
    tags = _one_run_over(instance, scopes, ad_hoc=bool(args.root))
    run_config = _run_config(args, scan)
    constants = home._constants()
    run_id = str(uuid.uuid4())  # known before the run: its cleanup's run_id is its own
    if args.no_cleanup:
        job = home._job(constants.ENUMERATE_JOB)
    else:
        job = home._job(constants.RUN_AND_CLEAN_JOB)
        ops = constants.cleanup_run_config(run_id)["ops"]
        run_config["ops"] = {**run_config.get("ops", {}), **ops}
        tags |= {constants.ENUMERATION_RUN_TAG: run_id, REQUESTED_BY_TAG: "enum-pipeline run"}
    home.start_work()
    result = job.execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False, tags=tags, run_id=run_id
    )
    info = _print_run(store, run_id, time.monotonic() - started, scopes)
    if not cleanup_due(store, run_id).due:
        for error in _step_errors(result):
            print(f"enum-pipeline: {error}", file=sys.stderr)
        if info is not None and info.error:
            print(f"enum-pipeline: run failed: {info.error}", file=sys.stderr)
        print("nothing was removed from the inventory", file=sys.stderr)
        return EXIT_FAILED
    code = EXIT_OK
    if not args.no_cleanup:
        code, _ = _cleanup_outcome(result, run_id)
    if _reports_here(args, pipeline):
        _reports(instance, run_id, args, pipeline)
    elif not args.no_reports:
        print(
            "reports: left to the sensor reports_after_enumeration (enum-pipeline ui, or the "
            "daemon); --reports makes them now"
        )
    return code


def _reports_here(args, pipeline: PipelineConfig) -> bool:
    """Whether ``enum-pipeline run`` materializes the reports itself: asked with ``--reports``,
    or a configured export file to write. Otherwise the daemon's sensor makes them (pandas and a
    third Dagster run would be most of this command's own time)."""
    if args.no_reports:
        return False
    if args.reports:
        return True
    return bool(pipeline.catalog.export_path)


def _cleanable(store, given: str) -> str:
    """The run id ``given`` names, when its cleanup is due (``steps.cleanup_due``, the rule the
    sensor asks too); a UsageError saying why not otherwise."""
    run_id = home._resolve_run(store, given)
    due = cleanup_due(store, run_id)
    if not due.due:
        raise UsageError(
            f"{due.reason}; only a completed, flush-verified run cleans up; {home._run_list(store)}"
        )
    return run_id


def _reports(instance, run_id: str, args, pipeline: PipelineConfig) -> bool:
    """Materialize the report assets after a completed run (a failure is shown, not fatal);
    the export goes where the run's configuration (``--config`` too) says."""
    job = home._job("inventory_reports")
    run_config: dict = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    if pipeline.catalog.export_path:
        export = {"path": pipeline.catalog.export_path, "format": pipeline.catalog.export_format}
        run_config["ops"] = {"inventory_export": {"config": export}}
    result = job.execute_in_process(
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        tags={home._constants().ENUMERATION_RUN_TAG: run_id},
    )
    if not result.success:
        for error in _step_errors(result):
            print(f"enum-pipeline: report failed: {error}", file=sys.stderr)
    return result.success


def cmd_cleanup(args) -> int:
    """The cleanup of one run (as the sensor requests it), optionally approved or dry."""
    store = home._store()
    run_id = _cleanable(store, args.run_id)
    plan_id = None
    if args.approve:
        plan_id = _require_blocked(store, run_id, args.plan)
    code, _ = _cleanup(
        home._instance(),
        store,
        run_id,
        args,
        approve=args.approve,
        dry_run=args.dry_run,
        plan_id=plan_id,
    )
    return code


def _require_blocked(store, run_id: str, plan_id: str | None) -> str:
    """The plan an approval approves: ``plan_id`` as given, or (none given) the run's blocked
    plan as it is now; a UsageError when the run has no blocked cleanup."""
    plan = store.blocked_plan(run_id)
    if plan is None:
        raise UsageError(wrong_target(store, "approve", run_id))
    if plan_id is not None and plan_id != plan.plan_id:  # the store refuses it too, atomically
        raise UsageError(
            f"plan {plan_id} is not the blocked plan of run {run_id}: that is plan "
            f"{plan.plan_id} now ({plan.would_remove} projects), so nothing was approved; "
            "review it and approve it by its id"
        )
    return plan_id or plan.plan_id


def cmd_approve(args) -> int:
    """Approve and carry out a cleanup the deletion guard held back."""
    store = home._store()
    run_id = _cleanable(store, args.run_id)
    plan_id = _require_blocked(store, run_id, args.plan)
    code, _ = _cleanup(home._instance(), store, run_id, args, approve=True, plan_id=plan_id)
    return code


def cmd_restore(args) -> int:
    """Bring back the projects a cleanup removed (through the ``restore_projects`` job)."""
    store = home._store()
    restorable = {r.run_id for r in store.restorable_cleanups()}
    try:  # a cleanup's run, or a prune's id, with projects to bring back
        run_id = home._resolve_run(store, args.run_id, removals=True)
    except _UnknownRun:
        raise UsageError(wrong_target(store, "restore", args.run_id)) from None
    if run_id not in restorable:
        raise UsageError(wrong_target(store, "restore", run_id))
    job = home._job("restore_projects")
    result = job.execute_in_process(
        instance=home._instance(),
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
