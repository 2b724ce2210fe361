"""pandas report assets downstream of a completed enumeration (never in the scan/flush path).

pandas is imported inside the asset bodies (via ``enum_pipeline.reports``), so loading the code
location stays fast. ``inventory_frame`` is the hand-off point for users' own assets: depend on
it and receive the inventory as a ``pd.DataFrame``.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MetadataValue,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
    in_process_executor,
    sensor,
)
from pydantic import Field

from enum_pipeline.defs.catalog import catalog
from enum_pipeline.defs.constants import ENUMERATION_RUN_TAG
from enum_pipeline.defs.jobs import enumerate_and_clean_up, enumerate_projects
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.store import CHANGE_KINDS

GROUP = "reports"
TOP = 20  # numeric metadata entries per dimension (the rest are in the table only)


def _spec() -> dict[str, Any]:
    c = catalog()
    return {"group_name": GROUP, "kinds": {"pandas"}, "owners": c.owners, "tags": c.tags}


def _table(counts: dict[str, int], what: str) -> MetadataValue:
    return MetadataValue.table(
        records=[TableRecord({what: k, "projects": v}) for k, v in counts.items()],
        schema=TableSchema(columns=[TableColumn(what, "string"), TableColumn("projects", "int")]),
    )


def _md(df, limit: int = 50) -> MetadataValue:
    if df.empty:
        return MetadataValue.md("_none_")
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.head(limit).itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    if len(df) > limit:
        lines.append(f"\n… and {len(df) - limit} more")
    return MetadataValue.md("\n".join(lines))


@asset(deps=[AssetKey("run_state")], **_spec())
def inventory_frame(context: AssetExecutionContext, inventory: InventoryResource):
    """The inventory after the latest completed run, as a pandas DataFrame (one row a project,
    the columns of ``enum-pipeline projects --format json``)."""
    from enum_pipeline.reports import column_schema
    from enum_pipeline.reports import inventory_frame as frame
    from enum_pipeline.store import select_projects

    store = inventory.store()
    df = frame(select_projects(store.engine))
    schema = TableSchema(columns=[TableColumn(c, t) for c, t in column_schema().items()])
    return Output(
        df,
        metadata={
            "dagster/column_schema": schema,
            "dagster/row_count": len(df),
            "database": inventory.display_url(),
        },
    )


@asset(**_spec())
def inventory_summary(context: AssetExecutionContext, inventory_frame) -> dict:
    """Counts by source, scope, VCS, visibility, language, ecosystem marker and activity age:
    tables to read, and plain numbers (``<dimension>/<value>``) Dagster plots over time."""
    from enum_pipeline.reports import summary

    counts = summary(inventory_frame)
    metadata: dict[str, Any] = {"projects": len(inventory_frame)}
    for dimension, values in counts.items():
        metadata[f"by_{dimension}"] = _table(values, dimension)
        for value, n in list(values.items())[:TOP]:
            metadata[f"{dimension}/{value}"] = n
    context.add_output_metadata(metadata)
    return counts


@asset(**_spec())
def clone_coverage(context: AssetExecutionContext, inventory_frame) -> dict:
    """Hosted repositories with no local clone, checkouts whose remote lies in no inventoried
    organisation, and repositories cloned more than once (joined on ``normalized_remote``)."""
    from enum_pipeline.reports import clone_coverage as coverage

    found = coverage(inventory_frame)
    context.add_output_metadata(
        {
            "not_cloned": len(found["not_cloned"]),
            "outside_orgs": len(found["outside_orgs"]),
            "cloned_twice": found["cloned_twice"]["normalized_remote"].str.lower().nunique(),
            "not_cloned_list": _md(found["not_cloned"]),
            "outside_orgs_list": _md(found["outside_orgs"]),
            "cloned_twice_list": _md(found["cloned_twice"]),
        }
    )
    return {k: v.to_dict(orient="records") for k, v in found.items()}


class ExportConfig(Config):
    """Run config of ``inventory_export`` (defaults: the configuration's ``catalog`` section)."""

    path: str | None = Field(default=None, description="File to write; unset: the configured.")
    format: str | None = Field(default=None, description="csv or parquet; unset: the configured")


@asset(**_spec())
def inventory_export(
    context: AssetExecutionContext, config: ExportConfig, inventory_frame
) -> Output[dict]:
    """Write the inventory to the configured CSV or Parquet file (skipped when none is set)."""
    from enum_pipeline.output import write_csv
    from enum_pipeline.reports import write_parquet
    from enum_pipeline.store import OUTPUT_COLUMNS

    settings = catalog()
    path = config.path or settings.export_path
    fmt = config.format or settings.export_format
    if fmt not in ("csv", "parquet"):
        raise Failure(f"inventory_export: unknown format {fmt!r} (csv or parquet)")
    if not path:
        context.log.info("no export path configured (catalog.export_path); nothing written")
        return Output({"path": None}, metadata={"written": False})
    if fmt == "parquet":
        write_parquet(inventory_frame, path)
    else:
        rows = inventory_frame.astype(object).where(inventory_frame.notna(), None)
        with open(path, "w", newline="", encoding="utf-8") as out:
            write_csv(rows.to_dict(orient="records"), out, OUTPUT_COLUMNS)
    return Output(
        {"path": path, "format": fmt},
        metadata={"written": True, "path": MetadataValue.path(path), "format": fmt,
                  "rows": len(inventory_frame)},
    )  # fmt: skip


inventory_reports = define_asset_job(
    "inventory_reports",
    selection=[
        AssetKey(k)
        for k in (
            "inventory_frame",
            "inventory_summary",
            "clone_coverage",
            "inventory_export",
            "run_changes",
        )
    ],
    executor_def=in_process_executor,
    description="The pandas reports of the inventory after a completed enumeration.",
)


@sensor(
    job=inventory_reports,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
)
def reports_after_enumeration(context: SensorEvaluationContext, inventory: InventoryResource):
    """Materialize the reports of the newest completed enumeration, once, when no enumeration
    run is queued or running: after a wave of scope runs (the schedule launches one run per
    scope; the reports come once the last has ended), and after runs this daemon did not see
    end (``enum-pipeline run`` leaves its reports to this sensor; so does a run made while no
    daemon ran)."""
    from enum_pipeline.store import latest_completed_run

    try:
        run_id = latest_completed_run(inventory.store())
    except Exception as err:  # noqa: BLE001 - a database down is this tick's skip, not an error
        return SkipReason(f"the inventory cannot be read: {err}")
    if run_id is None:
        return SkipReason("no enumeration has completed yet")
    made = context.instance.get_runs(
        RunsFilter(job_name=inventory_reports.name, tags={ENUMERATION_RUN_TAG: run_id}), limit=1
    )
    if made:
        return SkipReason(
            f"the reports of run {run_id} (the newest completed) are Dagster run "
            f"{made[0].run_id} ({made[0].status.value.lower()})"
        )
    pending = sum(
        context.instance.get_runs_count(RunsFilter(job_name=job.name, statuses=_NOT_FINISHED))
        for job in (enumerate_projects, enumerate_and_clean_up)
    )
    if pending:
        return SkipReason(
            f"run {run_id} completed while {pending} enumeration runs are still queued or "
            "running: the reports come once they have ended"
        )
    return RunRequest(run_key=f"reports-{run_id}", tags={ENUMERATION_RUN_TAG: run_id})


_NOT_FINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@asset(deps=[AssetKey("run_state")], **_spec())
def run_changes(context: AssetExecutionContext, inventory: InventoryResource) -> Output[list]:
    """What the latest completed run added, changed (which fields) and removed."""
    from enum_pipeline.store import latest_completed_run

    store = inventory.store()
    run_id = latest_completed_run(store)
    if run_id is None:
        return Output([], metadata={"run_id": "", "added": 0, "changed": 0, "removed": 0})
    changes = [
        {
            "project_key": c.project_key,
            "name": c.name,
            "scope_key": c.scope_key,
            "change": c.change,
            "fields": list(c.fields),
        }
        for c in store.run_changes(run_id)
    ]
    count = {kind: sum(1 for c in changes if c["change"] == kind) for kind in CHANGE_KINDS}
    lines = ["| change | name | scope | fields |", "|---|---|---|---|"]
    for c in changes[:100]:
        lines.append(
            f"| {c['change']} | {c['name']} | {c['scope_key']} | {', '.join(c['fields'])} |"
        )
    return Output(
        changes,
        metadata={"run_id": run_id, **count, "changes": MetadataValue.md("\n".join(lines))},
    )
