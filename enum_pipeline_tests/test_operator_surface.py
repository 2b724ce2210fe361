"""The operator's surface through a real ``enum-pipeline ui`` (``dagster dev``: webserver and
daemon, the project's ``dagster.yaml`` in force), over GraphQL and in a real browser.

A run, a blocked cleanup (its Dagster run fails on one sentence; its metadata names the projects
and the plan; removed 0), the approval of exactly that plan through its approve link (the bare
``approve_cleanup`` approves nothing), a restore by the cleanup's own Dagster run id, and the row
count on ``projects`` after each. The browser test drives Debian's chromium
through Playwright (``scripts/test`` installs chromium when missing) and keeps its screenshots
under ``enum_pipeline_tests/artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from enum_pipeline.defs.constants import SCOPES_PARTITIONS
from enum_pipeline.defs.scopes import PARTITION_TAG, partition_key
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline_tests.conftest import make_repo
from enum_pipeline_tests.test_deployment_graphql import (
    ADD_PARTITION_MUTATION,
    ADDED,
    FINISHED,
    LAUNCH_RUN_MUTATION,
    LOCATION,
    REPOSITORY,
    RUN_QUERY,
    GraphQL,
    _dump_logs,
    _free_port,
    _process_group,
    _runs,
    _wait,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("enum-pipeline"))
ARTIFACTS = REPO_ROOT / "enum_pipeline_tests" / "artifacts"
CHROMIUM = os.environ.get("ENUM_PIPELINE_CHROMIUM", "/usr/bin/chromium")
NAMES = ["alpha", "beta", "gamma"]
TIMEOUT = 240

RUN_TAGS_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { tags { key value } } }
}
"""

RUN_EVENTS_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      eventConnection {
        events {
          __typename
          ... on MaterializationEvent {
            assetKey { path }
            metadataEntries {
              label
              ... on IntMetadataEntry { intValue }
              ... on TextMetadataEntry { text }
              ... on UrlMetadataEntry { url }
              ... on TableMetadataEntry { table { records } }
            }
          }
          ... on AssetCheckEvaluationEvent {
            evaluation { success severity description }
          }
        }
      }
    }
  }
}
"""

PROJECTS_ROW_COUNT_QUERY = """
query {
  assetOrError(assetKey: {path: ["projects"]}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""


@contextlib.contextmanager
def ui_over(tmp_path: Path, db_url: str, roots: list[Path]) -> Iterator[tuple[GraphQL, int, tuple]]:
    """``enum-pipeline ui`` over ``roots`` (``ENUM_PIPELINE_ROOTS``) on a free port, with a
    fresh ``DAGSTER_HOME`` it seeds itself: the GraphQL client, the port, the processes."""
    home = tmp_path / "dagster_home"  # absent: the ui command creates and seeds it
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENUM_PIPELINE_ROOTS": os.pathsep.join(str(r) for r in roots),
        "ENUM_PIPELINE_DATABASE_URL": db_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ENUM_PIPELINE_CONFIG", None)
    port = _free_port()
    log = tmp_path / "enum-pipeline-ui.log"
    gql = GraphQL(f"http://127.0.0.1:{port}")
    try:
        with _process_group([CLI, "ui", "--port", str(port)], env, log) as proc:
            _wait(
                "for the UI",
                TIMEOUT,
                lambda: gql.http.get("/server_info").status_code == 200,
                (proc,),
            )
            assert "QueuedRunCoordinator" in (home / "dagster.yaml").read_text()
            yield gql, port, (proc,)
    except BaseException:
        _dump_logs([log])
        raise
    finally:
        gql.close()


@contextlib.contextmanager
def ui_server(tmp_path: Path, db_url: str) -> Iterator[tuple[GraphQL, Path, int, tuple]]:
    """``ui_over`` one root of ``NAMES``."""
    src = tmp_path / "src"
    for name in NAMES:
        make_repo(src / name)
    with ui_over(tmp_path, db_url, [src]) as (gql, port, procs):
        yield gql, src, port, procs


def add_scope_partition(gql: GraphQL, src: Path) -> str:
    """Add the partition of the scope ``src`` as the UI's "Add partition" does; its key."""
    key = partition_key(FilesystemSource.scope_key_for(str(src)))
    repository = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    added = gql(ADD_PARTITION_MUTATION, selector=repository, name=SCOPES_PARTITIONS, key=key)
    # the daemon's sync_scope_partitions may have added it already
    assert added["addDynamicPartition"]["__typename"] in ADDED, added
    return key


def launch(
    gql: GraphQL, job: str, run_config: dict | None = None, partition: str | None = None
) -> str:
    """Launch ``job`` (of ``partition``) through GraphQL; returns the Dagster run id."""
    tags = [{"key": PARTITION_TAG, "value": partition}] if partition else []

    def launched():
        data = gql(
            LAUNCH_RUN_MUTATION,
            executionParams={
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": job,
                },
                "runConfigData": run_config or {},
                "executionMetadata": {"tags": tags},
            },
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    return _wait(f"to launch {job}", TIMEOUT, launched)


def finished(gql: GraphQL, run_id: str, procs) -> str:
    """Wait for a run to finish; returns its status."""

    def status():
        run = gql(RUN_QUERY, runId=run_id)["runOrError"]
        return run["status"] if run["status"] in FINISHED else None

    return _wait(f"for run {run_id}", TIMEOUT, status, procs)


def sensor_cleanup(gql: GraphQL, enumeration_run: str, procs) -> tuple[str, str]:
    """The cleanup run the sensor starts for ``enumeration_run``: (run id, final status)."""
    tags = [{"key": "enum_pipeline/enumeration_run", "value": enumeration_run}]

    def done():
        runs = _runs(gql, pipelineName="cleanup_projects", tags=tags)
        return next(((r["runId"], r["status"]) for r in runs if r["status"] in FINISHED), None)

    return _wait("for the sensor's cleanup_projects", TIMEOUT + 60, done, procs, interval=2.0)


def run_events(gql: GraphQL, run_id: str) -> tuple[dict, list[dict]]:
    """(metadata of the run's stale_projects_cleanup materialization, check evaluations)."""
    data = gql(RUN_EVENTS_QUERY, runId=run_id)["runOrError"]
    events = data["eventConnection"]["events"]
    metadata = {}
    for e in events:
        cleanup = e.get("assetKey", {}).get("path") == ["stale_projects_cleanup"]
        if e["__typename"] == "MaterializationEvent" and cleanup:
            metadata = {m["label"]: m for m in e["metadataEntries"]}
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    return metadata, checks


def link_config(link: str) -> dict:
    """The run config an approve link fills into ``approve_cleanup``'s launchpad."""
    [config] = parse_qs(urlparse(link).query)["config"]
    return yaml.safe_load(config)


def projects_row_count(gql: GraphQL) -> int:
    data = gql(PROJECTS_ROW_COUNT_QUERY)["assetOrError"]
    [latest] = data["assetMaterializations"]
    entries = {m["label"]: m for m in latest["metadataEntries"]}
    return entries["dagster/row_count"]["intValue"]


def _partition_keys(gql: GraphQL, run_id: str) -> list[str]:
    """The partition key of a launched run (from its tags)."""
    run = gql(RUN_TAGS_QUERY, runId=run_id)["runOrError"]
    return [t["value"] for t in run["tags"] if t["key"] == PARTITION_TAG]


def blocked_cleanup(gql: GraphQL, src: Path, procs) -> tuple[str, str]:
    """Enumerate, empty the root, enumerate again: (second run id, its blocked cleanup's id)."""
    key = add_scope_partition(gql, src)
    first = launch(gql, "enumerate_projects", partition=key)
    assert finished(gql, first, procs) == "SUCCESS"
    assert projects_row_count(gql) == len(NAMES)
    assert sensor_cleanup(gql, first, procs)[1] == "SUCCESS"  # nothing to remove
    for child in src.iterdir():
        shutil.rmtree(child)
    second = launch(gql, "enumerate_projects", partition=key)
    assert finished(gql, second, procs) == "SUCCESS"
    cleanup_id, status = sensor_cleanup(gql, second, procs)
    assert status == "FAILURE"  # recorded, then failed by its blocking check
    return second, cleanup_id


@pytest.mark.slow
def test_graphql_run_blocked_cleanup_one_step_approval_restore(tmp_path, db_url):
    with ui_server(tmp_path, db_url) as (gql, src, _port, procs):
        second, cleanup_id = blocked_cleanup(gql, src, procs)
        metadata, checks = run_events(gql, cleanup_id)
        assert metadata["status"]["text"] == "blocked"
        assert metadata["removed"]["intValue"] == 0
        assert metadata["would_remove"]["intValue"] == len(NAMES)
        records = [json.loads(r) for r in metadata["projects"]["table"]["records"]]
        assert sorted(r["name"] for r in records) == NAMES
        assert {r["action"] for r in records} == {"remove"}
        plan_id = metadata["plan_id"]["text"]
        link = metadata["approve"]["url"]
        assert "approve_cleanup" in link and plan_id in link
        [check] = checks
        assert not check["success"] and check["severity"] == "ERROR"
        assert f"would remove {len(NAMES)}" in check["description"]
        assert (
            cleanup_id in check["description"] and f"approve plan {plan_id}" in check["description"]
        )
        assert projects_row_count(gql) == len(NAMES)

        [key] = _partition_keys(gql, second)
        bare = launch(gql, "approve_cleanup", None, key)  # no plan named: nothing is approved
        assert finished(gql, bare, procs) == "FAILURE"
        assert projects_row_count(gql) == len(NAMES)
        approval = launch(gql, "approve_cleanup", link_config(link), key)  # what the link fills
        assert finished(gql, approval, procs) == "SUCCESS"
        metadata, checks = run_events(gql, approval)
        assert metadata["removed"]["intValue"] == len(NAMES)
        gone = [json.loads(r) for r in metadata["projects"]["table"]["records"]]
        assert sorted(r["name"] for r in gone) == NAMES
        assert [c["success"] for c in checks] == [True]
        assert projects_row_count(gql) == 0

        restore = launch(
            gql,
            "restore_projects",
            {"ops": {"restore_removed_projects": {"config": {"run_id": approval}}}},
        )
        assert finished(gql, restore, procs) == "SUCCESS"
        assert projects_row_count(gql) == len(NAMES)


def _browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: scripts/test installs it (apt-get install chromium)")
    return playwright


@pytest.mark.slow
def test_browser_run_page_opens_on_the_sentence_and_two_clicks_approve_the_plan(tmp_path, request):
    sync_api = _browser()
    db_url = f"sqlite:///{tmp_path / 'inventory.sqlite'}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with ui_server(tmp_path, db_url) as (gql, src, port, procs):
            second, cleanup_id = blocked_cleanup(gql, src, procs)
            metadata, _ = run_events(gql, cleanup_id)
            plan_id = metadata["plan_id"]["text"]
            base = f"http://127.0.0.1:{port}"
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--no-first-run",
                    ],
                )
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                try:
                    walk(page, base, shots, cleanup_id, second, plan_id)
                except BaseException:
                    page.screenshot(path=str(shots / "failure.png"), full_page=True)
                    raise
                browser.close()
            assert projects_row_count(gql) == 0
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / request.node.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(shots, target)


def sync_api_timeout():
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    return PlaywrightTimeout


def in_view(page, locator) -> list[dict]:
    """The bounding boxes of ``locator``'s matches that lie in the viewport as it is now."""
    height = page.viewport_size["height"]
    boxes = []
    for i in range(locator.count()):
        box = locator.nth(i).bounding_box()
        if box and box["height"] > 0 and 0 <= box["y"] < height:
            boxes.append(box)
    return boxes


def walk(page, base: str, shots: Path, cleanup_id: str, enumeration_id: str, plan_id: str):
    """The operator's walk: the failed run's page → the asset's Overview → two clicks."""
    # The cleanup's run page, as it opens: the sentence is in view, above any stack trace.
    page.goto(f"{base}/runs/{cleanup_id}")
    with contextlib.suppress(sync_api_timeout()):
        page.get_by_role("button", name="Skip").click(timeout=15_000)  # first visit's dialog
    sentence = page.get_by_text(f"Cleanup of run {enumeration_id} held back by the deletion guard")
    sentence.first.wait_for(state="attached")
    time.sleep(3)  # the log view settles on its tail
    page.screenshot(path=str(shots / "1-run-page-opens-on-the-sentence.png"))
    said = in_view(page, sentence)
    assert said, "the sentence is not in view when the run page opens"
    first_said = min(box["y"] for box in said)
    stacks = in_view(page, page.get_by_text("Stack Trace:"))
    assert all(box["y"] > first_said for box in stacks), (said, stacks)
    assert f"approve plan {plan_id}" in page.inner_text("body")

    # The asset's Overview: the failed check, and the approve link first in its metadata.
    page.goto(f"{base}/assets/stale_projects_cleanup")
    page.get_by_text("Latest check results").wait_for()
    link = page.locator('a[href*="approve_cleanup/playground"]').first
    link.wait_for()
    time.sleep(2)
    page.screenshot(path=str(shots / "2-asset-overview-blocked.png"))
    assert plan_id in link.get_attribute("href")
    page.goto(f"{base}/assets/stale_projects_cleanup?view=checks")
    page.get_by_text(f"Cleanup run {cleanup_id} of run {enumeration_id} is blocked").wait_for()
    time.sleep(2)
    page.screenshot(path=str(shots / "3-failed-check-description.png"))

    # Two clicks from the Overview: the approve link, then Launch Run.
    page.goto(f"{base}/assets/stale_projects_cleanup")
    link = page.locator('a[href*="approve_cleanup/playground"]').first
    link.scroll_into_view_if_needed()
    clicks = 0
    try:  # the UI opens a metadata link in a new tab
        with page.context.expect_page(timeout=15_000) as opened:
            link.click()
        launchpad = opened.value
    except sync_api_timeout():
        launchpad = page
    clicks += 1
    launchpad.set_default_timeout(60_000)
    launch_button = launchpad.get_by_role("button", name="Launch Run")
    launch_button.wait_for()
    launchpad.get_by_text(plan_id).first.wait_for()  # the filled-in config names the plan
    time.sleep(3)
    launchpad.screenshot(path=str(shots / "4-approve-launchpad.png"), full_page=True)
    launch_button.click()
    clicks += 1
    launchpad.wait_for_url("**/runs/**", timeout=60_000)
    launchpad.get_by_text("Success").first.wait_for(timeout=180_000)
    assert clicks <= 2
    time.sleep(2)
    launchpad.screenshot(path=str(shots / "5-approval-run.png"), full_page=True)

    page.goto(f"{base}/assets/stale_projects_cleanup")
    page.get_by_text("done").first.wait_for()
    time.sleep(2)
    page.screenshot(path=str(shots / "6-approved-cleanup.png"), full_page=True)
    names_on_page(page, shots / "6b-removed-projects-named.png")


def names_on_page(page, shot: Path) -> None:
    """Every project name is shown (scrolled into view) in the metadata's projects table."""
    for name in NAMES:
        cell = page.get_by_text(name, exact=True).first
        cell.scroll_into_view_if_needed()
        assert cell.is_visible(), name
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shot))
