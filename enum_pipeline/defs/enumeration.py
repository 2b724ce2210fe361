"""One enumeration run of a set of scopes (its partitions): scan → flush (upsert, verify) →
run state, as one multi-asset the UI cannot split.

A run's scopes are its partition keys: one partition (the schedule, a multi-run backfill) or a
range (a single-run backfill, ``enum-pipeline run``). Only those scopes' sources are built.
The assets carry no value between runs (their outputs are ``Nothing``): the steps pass the
run's summary to each other as op outputs, so a partition range needs no I/O manager support.
"""

from dataclasses import asdict

from dagster import (
    AssetExecutionContext,
    AssetOut,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    graph_multi_asset,
    op,
)
from pydantic import Field

from enum_pipeline.defs import tables
from enum_pipeline.defs.catalog import catalog, database_kind, freshness, source_kinds
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.scopes import SCOPES, scope_key
from enum_pipeline.scan import ScanSummary
from enum_pipeline.steps import finish_run, flush_run, start_run, verify_run

GROUP = "inventory"
PREVIEW_ROWS = 20
DB_KINDS = {database_kind()}
CATALOG = {"owners": catalog().owners, "tags": catalog().tags}
#: The node of the multi-asset: run config of the scan is ``ops.enumeration.ops.scanned_projects``.
NODE = "enumeration"
SCAN_OP = "scanned_projects"


class ScanConfig(Config):
    """Run config of the scan (``scanned_projects``): overrides of the configured sources."""

    config_path: str | None = Field(
        default=None, description="YAML configuration file (default: ENUM_PIPELINE_CONFIG)."
    )
    roots: list[str] | None = Field(
        default=None, description="Scan these folders instead of the configured sources."
    )


def scan_run_config(scan: dict) -> dict:
    """The run config that passes ``scan`` (``ScanConfig`` fields) to the scan."""
    return {"ops": {NODE: {"ops": {SCAN_OP: {"config": scan}}}}}


# The executors that run every step of a job in the launching process: the run's holder (its
# pid, its lease, its heartbeat thread; see enum_pipeline.steps) must outlive the first step.
IN_PROCESS_EXECUTORS = ("in_process", "execute_in_process_executor")


def _require_in_process(context: AssetExecutionContext | OpExecutionContext) -> None:
    executor = context.job_def.executor_def.name
    if executor not in IN_PROCESS_EXECUTORS:
        raise Failure(
            f"the enumeration must run under the in-process executor, not {executor!r}: its "
            "steps share the process that holds the run (pid, lease, heartbeat thread)"
        )


def run_scope_keys(context: OpExecutionContext) -> list[str]:
    """The scope keys of this run: its partition keys (one, or a range)."""
    return [scope_key(k) for k in context.partition_keys]


def inventory_run_id(context, store) -> str:
    """The inventory run this Dagster run works on: its own, or (a re-execution that did not
    scan again) the nearest ancestor's whose scan it resumed."""
    from enum_pipeline.store import UnknownRunError

    run = context.run
    while run is not None:
        try:
            store.get_run(run.run_id)
            return run.run_id
        except UnknownRunError:
            parent = run.parent_run_id
            run = context.instance.get_run_by_id(parent) if parent else None
    raise Failure(f"Dagster run {context.run.run_id} began no enumeration run")


def _scope_table(scopes: list[dict]) -> MetadataValue:
    lines = ["| scope | complete | seen | reason |", "|---|---|---|---|"]
    for s in scopes:
        reason = (s.get("reason") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s['scope_key']} | {s['complete']} | {s['seen']} | {reason} |")
    return MetadataValue.md("\n".join(lines))


QUARANTINE_LISTED = 20


def _quarantine_md(summary: ScanSummary) -> MetadataValue:
    """The records the database could not take, with why (capped: the CLI lists all)."""
    quarantined = summary.quarantined
    if not quarantined:
        return MetadataValue.md("none")
    lines = ["| scope | project key | reason |", "|---|---|---|"]
    for q in quarantined[:QUARANTINE_LISTED]:
        cells = (
            c.replace("|", "\\|").replace("\n", " ") for c in (q.scope_key, q.project_key, q.reason)
        )
        lines.append("| " + " | ".join(cells) + " |")
    if len(quarantined) > QUARANTINE_LISTED:
        lines.append(
            f"\n{len(quarantined) - QUARANTINE_LISTED} more: "
            f"`enum-pipeline runs --quarantined {summary.run_id}`"
        )
    return MetadataValue.md("\n".join(lines))


@op(name=SCAN_OP, out={"scanned_projects": Out(Nothing), "scanned": Out(dict)})
def scan_scopes(context: OpExecutionContext, config: ScanConfig, inventory: InventoryResource):
    """Begin the run, then stream the sources of the run's scopes into its staging table.

    Every scope ends complete or incomplete; an incomplete scope protects its projects.
    """
    _require_in_process(context)
    from enum_pipeline.config import ConfigError

    scopes = run_scope_keys(context)
    try:
        pipeline = inventory.pipeline_config(config.config_path, config.roots)
        configured = pipeline.build_sources()  # every source checked before the run begins
        sources = pipeline.narrow(configured, scopes)
    except ConfigError as err:
        raise Failure(str(err)) from None
    store = inventory.store()
    run_id = context.run.run_id

    def progress(summary: ScanSummary) -> None:
        context.log.info(
            f"scan progress: {summary.scanned} projects, {len(summary.verdicts)} scopes ended, "
            f"{summary.seconds:.0f}s"
        )

    # The run carries the policy its cleanup applies, and (unless roots were given ad hoc) the
    # configured scopes, so rows of any other scope become orphans instead of candidates.
    summary = start_run(
        store,
        run_id,
        sources,
        policy=pipeline.cleanup,
        configured_scopes=None if config.roots else [k for s in configured for k in s.scope_keys()],
        batch_size=pipeline.batch_size,
        parallel_sources=pipeline.parallel_sources,
        on_progress=progress,
        log=lambda m: context.log.info(f"{m} on {inventory.display_url()}"),
    )
    data = summary.as_dict()
    for verdict in summary.incomplete:
        context.log.warning(f"scope {verdict.scope_key} incomplete: {verdict.reason}")
    for q in summary.quarantined[:QUARANTINE_LISTED]:
        context.log.warning(f"quarantined {q.project_key} ({q.scope_key}): {q.reason}")
    yield Output(
        None,
        "scanned_projects",
        metadata={
            "run_id": run_id,
            "generation": summary.generation,
            "scanned": summary.scanned,
            "staged": summary.staged,
            "scopes": len(summary.verdicts),
            "incomplete_scopes": len(summary.incomplete),
            "scan_seconds": round(summary.seconds, 3),
            "scope_verdicts": _scope_table(data["scopes"]),
            "quarantined": len(summary.quarantined),
            "quarantined_records": _quarantine_md(summary),
            **tables.budget_metadata(data["scopes"]),
        },
    )
    yield Output(data, "scanned")


@op(out=Out(dict))
def upsert_projects(
    context: OpExecutionContext, inventory: InventoryResource, scanned: dict
) -> dict:
    """Set-based upsert of the run's staged records into ``projects``.

    In a re-execution (a new Dagster run) the staged run is resumed, never re-scanned.
    """
    run_id = scanned["run_id"]
    if context.run_id != run_id and context.run.parent_run_id is None:
        raise Failure(
            "projects is written by its own scan: launch the job enumerate_projects "
            "(or re-execute a failed enumeration from failure); nothing was begun"
        )
    result = flush_run(inventory.store(), run_id, context.run_id, log=context.log.info)
    context.log.info(
        f"flushed {result.staged}: {result.added} added, {result.changed} changed, "
        f"{result.unchanged} unchanged"
    )
    return asdict(result)


@op(out={"projects": Out(Nothing), "verified": Out(dict)})
def verify_flush(context: OpExecutionContext, inventory: InventoryResource, flushed: dict):
    """Prove every staged record landed with this run's generation, then confirm the rows.

    A failed proof marks the run failed and is recorded as ``flush_succeeded=False`` (the
    check ``projects_flush_verified`` fails, then ``run_state`` fails the run, and the cleanup
    sensor skips it).
    """
    store = inventory.store()
    run_id = flushed["run_id"]
    outcome = verify_run(store, run_id)
    error, confirmed = outcome.error, outcome.confirmed
    value = {**flushed, "flush_succeeded": error is None, "confirmed": confirmed, "error": error}
    preview = store.projects(limit=PREVIEW_ROWS)
    delta = [c for c in store.run_changes(run_id) if c.change != "removed"]
    yield Output(
        None,
        "projects",
        metadata={
            "flush_succeeded": error is None,
            "run_id": run_id,
            "generation": flushed["generation"],
            "staged": flushed["staged"],
            "added": flushed["added"],
            "changed": flushed["changed"],
            "unchanged": flushed["unchanged"],
            "confirmed": confirmed,
            "dagster/row_count": store.count_projects(),
            "error": error or "",
            "dagster/table_name": "projects",
            "dagster/column_schema": tables.projects_column_schema(),
            **tables.table_metadata(
                "added_and_changed",
                tables.change_rows(delta),
                tables.CHANGE_SCHEMA,
                f"enum-pipeline diff {run_id}",
            ),
            "scopes": scope_summary(store),
            "preview": MetadataValue.md(_preview_table(preview)),
        },
    )
    yield Output(value, "verified")


def scope_summary(store) -> MetadataValue:
    """The per-scope summary of ``projects`` as table metadata."""
    rows = [
        {k: r[k] for k in ("scope", "total", "missing", "out_of_coverage", "incomplete")}
        for r in store.scope_summary()
    ]
    return tables.capped(rows, tables.SCOPE_SCHEMA, "enum-pipeline runs")["table"]


def _preview_table(rows: list[dict]) -> str:
    lines = ["| name | vcs | location | branch | markers |", "|---|---|---|---|---|"]
    for r in rows:
        markers = ", ".join(r.get("markers") or [])
        cells = [r["name"], r["vcs"] or "", r["location"], r["default_branch"] or "", markers]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@op(name="run_state", out=Out(Nothing))
def complete_run(context: OpExecutionContext, inventory: InventoryResource, verified: dict):
    """Complete the run: ``completed`` iff its flush was verified, else ``failed``."""
    run_id = verified["run_id"]
    finished = finish_run(inventory.store(), run_id, log=context.log.info)
    status, info = finished.status, finished.info
    metadata = {
        "run_id": run_id,
        "generation": info.generation,
        "status": status,
        "flush_succeeded": info.flush_succeeded,
        "scanned": info.scanned_count,
        "added": info.added_count,
        "changed": info.changed_count,
        "unchanged": info.unchanged_count,
        "confirmed": info.confirmed_count,
        "error": info.error or "",
    }
    if status != "completed":
        raise Failure(f"run {run_id} ended {status}: {info.error}", metadata=metadata)
    context.add_output_metadata(metadata)


@graph_multi_asset(
    name=NODE,
    outs={
        "scanned_projects": AssetOut(
            kinds=source_kinds(),
            description="The run's scan: every source of its scopes streamed into staging.",
            **CATALOG,
        ),
        "projects": AssetOut(
            kinds=DB_KINDS,
            description="The inventory table: the run's flush (upsert_projects → verify_flush).",
            **CATALOG,
        ),
        "run_state": AssetOut(
            kinds=DB_KINDS,
            description="The run's end: completed iff its flush was verified, else failed.",
            **CATALOG,
        ),
    },
    group_name=GROUP,
    partitions_def=SCOPES,
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=False,
)
def enumeration():
    """One enumeration run of the run's scopes (its partition keys)."""
    scanned_asset, scanned = scan_scopes()
    projects_asset, verified = verify_flush(upsert_projects(scanned))
    return {
        "scanned_projects": scanned_asset,
        "projects": projects_asset,
        "run_state": complete_run(verified),
    }


# fresh when a run has completed since the schedule's last tick (graph_multi_asset drops an
# AssetOut's freshness policy, so it is set on the spec)
enumeration = enumeration.map_asset_specs(
    lambda spec: (
        spec.replace_attributes(freshness_policy=freshness())
        if spec.key.to_user_string() == "run_state"
        else spec
    )
)
