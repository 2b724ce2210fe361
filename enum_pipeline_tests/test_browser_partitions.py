"""The scope partitions in a real browser, through a real ``enum-pipeline ui`` (``dagster dev``:
webserver and daemon, the project's ``dagster.yaml`` in force).

Two filesystem roots are configured; one does not exist yet, so its scope fails for real (read
incomplete). "Materialize all" on the asset graph (the enumeration's three assets) launches a
backfill over both scope partitions: its run succeeds and the inventory holds the projects of
the readable root. The failing scope shows in the UI as such (``scope_health`` failed for its
partition, with the reason). Once the root exists, that one partition is re-run alone from its
partition page (a run of just that partition) and its check passes.

Chromium is Debian's (``scripts/test`` installs it); the screenshots are kept under
``enum_pipeline_tests/artifacts/<test name>/``.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from enum_pipeline.defs.scopes import PARTITION_TAG, partition_key
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.conftest import make_repo
from enum_pipeline_tests.test_deployment_graphql import (
    FINISHED,
    GraphQL,
    _runs,
    _wait,
)
from enum_pipeline_tests.test_operator_surface import (
    ARTIFACTS,
    CHROMIUM,
    NAMES,
    TIMEOUT,
    _browser,
    sync_api_timeout,
    ui_over,
)

ASSET_JOB = "__ASSET_JOB"
#: The asset graph narrowed to the enumeration's multi-asset (the cleanup and the reports have
#: their own launchers: the sensors).
ENUMERATION_SELECTION = 'key:"scanned_projects" or key:"projects" or key:"run_state"'
LATE = "delta"  # the project of the root that appears late

PARTITION_KEYS_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["run_state"]}) {
    __typename
    ... on AssetNode { partitionKeys }
  }
}
"""

BACKFILLS_QUERY = """
query {
  partitionBackfillsOrError {
    __typename
    ... on PartitionBackfills { results { id status runs(limit: 10) { runId status } } }
  }
}
"""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextlib.contextmanager
def two_roots_ui(tmp_path: Path, db_url: str) -> Iterator[tuple[GraphQL, Path, Path, int, tuple]]:
    """``enum-pipeline ui`` over two roots: ``good`` (``NAMES``) and ``bad`` (absent)."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for name in NAMES:
        make_repo(good / name)
    with ui_over(tmp_path, db_url, [good, bad]) as (gql, port, procs):
        yield gql, good, bad, port, procs


def scope_partition(root: Path) -> str:
    return partition_key(FilesystemSource.scope_key_for(str(root)))


def partitions_synced(gql: GraphQL, keys: list[str], procs) -> None:
    """Wait for the daemon's ``sync_scope_partitions`` to add the partitions of both roots."""

    def synced():
        node = gql(PARTITION_KEYS_QUERY)["assetNodeOrError"]
        return set(keys) <= set(node["partitionKeys"])

    _wait("for sync_scope_partitions", TIMEOUT, synced, procs, interval=2.0)


def backfill_done(gql: GraphQL, procs) -> dict:
    """The one backfill the UI launched, once it and its runs have finished."""

    def done():
        [backfill] = gql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]
        runs = backfill["runs"]
        ended = runs and all(r["status"] in FINISHED for r in runs)
        return backfill if ended and backfill["status"].startswith("COMPLETED") else None

    return _wait("for the backfill of Materialize all", TIMEOUT + 60, done, procs, interval=2.0)


def partition_run_done(gql: GraphQL, key: str, procs) -> dict:
    """The asset run of partition ``key`` alone, once it has finished."""

    def done():
        runs = _runs(gql, pipelineName=ASSET_JOB, tags=[{"key": PARTITION_TAG, "value": key}])
        return next((r for r in runs if r["status"] in FINISHED), None)

    return _wait(f"for the run of partition {key}", TIMEOUT + 60, done, procs, interval=2.0)


def inventory_names(db_url: str) -> list[str]:
    store = InventoryStore(db_url)
    try:
        return sorted(p["name"] for p in store.projects())
    finally:
        store.dispose()


@pytest.mark.slow
def test_browser_materialize_all_then_rerun_the_failing_scope_alone(tmp_path, request):
    sync_api = _browser()
    db_url = f"sqlite:///{tmp_path / 'inventory.sqlite'}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with two_roots_ui(tmp_path, db_url) as (gql, good, bad, port, procs):
            good_key, bad_key = scope_partition(good), scope_partition(bad)
            partitions_synced(gql, [good_key, bad_key], procs)
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                try:
                    walk(page, f"http://127.0.0.1:{port}", shots, gql, procs, db_url, bad)
                except BaseException:
                    page.screenshot(path=str(shots / "failure.png"), full_page=True)
                    raise
                browser.close()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / request.node.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(shots, target)


def walk(page, base: str, shots: Path, gql: GraphQL, procs, db_url: str, bad: Path) -> None:
    bad_key = scope_partition(bad)

    # 1. "Materialize all" on the asset graph of the enumeration, over all (both) partitions.
    page.goto(f"{base}/asset-groups~{quote(ENUMERATION_SELECTION, safe='')}/")
    with contextlib.suppress(sync_api_timeout()):
        page.get_by_role("button", name="Skip").click(timeout=10_000)  # first visit's dialog
    materialize_all = page.get_by_role("button", name="Materialize all")
    materialize_all.wait_for()
    page.get_by_text("run_state", exact=True).first.wait_for()
    time.sleep(2)
    page.screenshot(path=str(shots / "1-asset-graph.png"))
    materialize_all.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Launch runs to materialize 3 assets").wait_for()
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text("2 partitions").wait_for()
    time.sleep(1)
    page.screenshot(path=str(shots / "2-materialize-all-dialog.png"))
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="hidden")

    backfill = backfill_done(gql, procs)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"], backfill
    assert inventory_names(db_url) == NAMES

    # 2. The failing scope, as the UI shows it: scope_health failed for its partition, and why.
    page.goto(f"{base}/assets/run_state?view=checks")
    page.get_by_text("1 of 2 scopes not healthy").wait_for()
    time.sleep(2)
    page.screenshot(path=str(shots / "3-scope-health-failed.png"))
    page.get_by_text("Execution history", exact=True).click()
    reason = page.get_by_text(f"root does not exist: {bad}")
    reason.wait_for()
    row = page.locator("tr", has=reason)
    assert "Failed" in row.inner_text() and bad_key in row.inner_text()
    time.sleep(1)
    page.screenshot(path=str(shots / "4-failed-partition-and-reason.png"))

    # 3. Fix the cause, then re-run that partition alone from its partition page.
    make_repo(bad / LATE)
    page.goto(f"{base}/assets/run_state?view=partitions&partition={quote(bad_key, safe='')}")
    page.get_by_text("View all historical events").wait_for()
    time.sleep(1)
    page.screenshot(path=str(shots / "5-partition-page.png"))
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    with contextlib.suppress(sync_api_timeout()):  # the multi-asset cannot be subset
        dialog.get_by_role("button", name="Confirm").click(timeout=15_000)
    dialog.get_by_text("1 partition", exact=True).wait_for()
    dialog.get_by_text(bad_key, exact=True).first.wait_for(state="attached")
    launch_one = dialog.get_by_role("button", name="Launch 1 run")
    launch_one.wait_for()
    time.sleep(1)
    page.screenshot(path=str(shots / "6-launch-the-partition-alone.png"))
    launch_one.click()
    dialog.wait_for(state="hidden")

    run = partition_run_done(gql, bad_key, procs)
    assert run["status"] == "SUCCESS", run
    assert inventory_names(db_url) == sorted([*NAMES, LATE])

    # 4. Its check now passes, for that partition.
    page.goto(f"{base}/assets/run_state?view=checks")
    page.get_by_text("Latest execution").wait_for()
    page.get_by_text("Succeeded", exact=True).first.wait_for()  # the check's latest status
    page.get_by_text("Execution history", exact=True).click()
    rows = page.locator("tbody tr")
    rows.first.wait_for()
    newest = rows.first.inner_text()
    assert "Passed" in newest and bad_key in newest, newest
    time.sleep(1)
    page.screenshot(path=str(shots / "7-scope-health-passed.png"))
