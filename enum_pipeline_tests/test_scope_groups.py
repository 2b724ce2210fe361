"""Grouped schedule runs (``scopes_per_run``): which scopes share a run, the schedule's run
requests for a configuration on a loopback GitHub, and one grouped request executed for real."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import build_schedule_context

from enum_pipeline.config import load_config, parse_config
from enum_pipeline.definitions import defs
from enum_pipeline.defs.constants import HOST_TOKEN_TAG, SCOPE_TAG, SCOPES_PARTITIONS
from enum_pipeline.defs.placement import K8S_CONFIG_TAG, scope_run_groups, scope_run_tags
from enum_pipeline.defs.resources import InventoryResource
from enum_pipeline.defs.schedules import enumerate_projects_schedule
from enum_pipeline.defs.scopes import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    partition_key,
    run_partition_tags,
)
from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, GitHubApp

RESOURCES = {"inventory": InventoryResource()}


def _github(owners: list[str], token_env: str = "TOKEN_A", **extra) -> list[dict]:
    return [{"kind": "github", "owner": o, "token_env": token_env, **extra} for o in owners]


def _sources(source_configs: list[dict]):
    return parse_config({"sources": source_configs}, "test.yaml").build_sources()


def _keys(sources) -> list[str]:
    return [partition_key(k) for s in sources for k in s.scope_keys()]


def _grouped(sources, order, per_run) -> list[list[str]]:
    return [keys for keys, _ in scope_run_groups(sources, order, per_run)]


def test_one_scope_per_run_is_todays_run_per_scope():
    sources = _sources(
        [
            *_github(["a", "b"]),
            *_github(["c"], "TOKEN_B"),
            {"kind": "filesystem", "roots": ["/srv/x", "/srv/y"]},
        ]
    )
    keys = _keys(sources)
    groups = scope_run_groups(sources, keys, 1)
    expected = [
        ([partition_key(scope)], {**scope_run_tags(s, scope), PARTITION_TAG: partition_key(scope)})
        for s in sources
        for scope in s.scope_keys()
    ]
    assert groups == expected
    assert len(groups) == 5


def test_groups_are_at_most_scopes_per_run_and_share_host_token_and_a_stable_scope_tag():
    sources = _sources(_github([f"o{i}" for i in range(7)]))
    keys = _keys(sources)
    groups = scope_run_groups(sources, keys, 3)
    assert [k for k, _ in groups] == [keys[0:3], keys[3:6], keys[6:7]]
    (first, tags), (_, second_tags), (last, last_tags) = groups
    assert tags[RANGE_START_TAG] == keys[0] and tags[RANGE_END_TAG] == keys[2]
    assert PARTITION_TAG not in tags
    assert tags[SCOPE_TAG] == f"{sources[0].scope_keys()[0]} +2 more"
    assert second_tags[SCOPE_TAG] == f"{sources[3].scope_keys()[0]} +2 more"
    assert {t[HOST_TOKEN_TAG] for _, t in groups} == {
        scope_run_tags(sources[0], "x")[HOST_TOKEN_TAG]
    }
    # a group of one is a run of one scope, as with scopes_per_run 1
    assert last_tags == {
        **scope_run_tags(sources[6], sources[6].scope_keys()[0]),
        PARTITION_TAG: keys[6],
    }
    assert scope_run_groups(sources, keys, 3) == groups  # the same from tick to tick
    assert _grouped(sources, keys, 1000) == [keys]


def test_another_token_or_host_or_kind_is_another_run():
    sources = _sources(
        [
            *_github(["a1", "a2"]),
            *_github(["b1", "b2"], "TOKEN_B"),
            *_github(["e1"], "TOKEN_B", base_url="https://ghe.example.com/api/v3"),
            {
                "kind": "gitea",
                "owner": "g1",
                "base_url": "https://gitea.example.com",
                "token_env": "TOKEN_B",
            },
            {"kind": "filesystem", "roots": ["/srv/x", "/srv/y"]},
        ]
    )
    keys = _keys(sources)
    assert _grouped(sources, keys, 10) == [keys[0:2], keys[2:4], [keys[4]], [keys[5]], keys[6:8]]
    host_tokens = [t[HOST_TOKEN_TAG] for _, t in scope_run_groups(sources, keys, 10)]
    assert len(set(host_tokens)) == 5


def test_a_different_placement_is_another_run_and_placed_roots_stay_alone():
    sources = _sources(
        [
            {"kind": "filesystem", "roots": ["/srv/p1"], "placement": {"node": "build-7"}},
            {"kind": "filesystem", "roots": ["/srv/p2"], "placement": {"node": "build-7"}},
            *_github(["n1", "n2"], placement={"node_selector": {"example.com/egress": "gh"}}),
            *_github(["u1", "u2"]),
        ]
    )
    keys = _keys(sources)
    groups = scope_run_groups(sources, keys, 10)
    # same node, but each root is mounted in its own pod: one run each
    assert [k for k, _ in groups] == [[keys[0]], [keys[1]], keys[2:4], keys[4:6]]
    assert groups[2][1][K8S_CONFIG_TAG] == scope_run_tags(sources[2], "x")[K8S_CONFIG_TAG]
    assert K8S_CONFIG_TAG not in groups[3][1]
    # n* and u* share the token: only the placement tells them apart
    assert groups[2][1][HOST_TOKEN_TAG] == groups[3][1][HOST_TOKEN_TAG]


def test_a_group_is_split_where_its_partitions_are_not_contiguous():
    # interleaved tokens in the configuration, partitions in the same order: no two of a
    # token are neighbours, so every scope is a run of its own
    sources = _sources([*_github(["a1"]), *_github(["b1"], "TOKEN_B"), *_github(["a2"])])
    keys = _keys(sources)
    assert _grouped(sources, keys, 5) == [[k] for k in keys]
    # the same scopes with a's partitions next to each other: one range
    a1, b1, a2 = keys
    assert _grouped(sources, [a1, a2, b1], 5) == [[a1, a2], [b1]]
    # a partition no longer configured (the sync sensor has not dropped it yet) sits between
    sources = _sources(_github(["o1", "o2", "o3", "o4"]))
    o1, o2, o3, o4 = _keys(sources)
    assert _grouped(sources, [o1, o2, "stale", o3, o4], 5) == [[o1, o2], [o3, o4]]
    # partitions in another order than the configuration: ranges follow the partitions
    assert _grouped(sources, [o3, o1, o2, o4], 2) == [[o3, o1], [o2, o4]]
    # a scope not (yet) a partition runs alone; o4 is o2's neighbour among the partitions
    assert _grouped(sources, [o1, o2, o4], 5) == [[o1, o2, o4], [o3]]


def test_a_scope_whose_last_reading_failed_runs_alone_and_splits_its_group():
    sources = _sources(_github(["o1", "o2", "o3", "o4", "o5"]))
    o1, o2, o3, o4, o5 = keys = _keys(sources)
    failed = sources[2].scope_keys()[0]
    assert [k for k, _ in scope_run_groups(sources, keys, 5, alone={failed})] == [
        [o1, o2],
        [o3],
        [o4, o5],
    ]
    (_, tags) = scope_run_groups(sources, keys, 5, alone={failed})[1]
    assert tags[SCOPE_TAG] == failed and tags[PARTITION_TAG] == o3
    assert _grouped(sources, keys, 5) == [keys]  # read completely again: one group


# --- the schedule, and a grouped run, on a loopback GitHub ------------------------------------

TOKENS = {
    "ENUM_TEST_GROUP_TOKEN_A": "test-only-a-NOT-REAL",
    "ENUM_TEST_GROUP_TOKEN_B": "test-only-b-NOT-REAL",
}
ORGS_A = ["alpha", "beta", "gamma"]
ORGS_B = ["delta", "epsilon"]
PER_ORG = {"alpha": 40, "beta": 35, "gamma": 30, "delta": 25, "epsilon": 20}


@pytest.fixture
def github(tmp_path, db_url, monkeypatch):
    """A loopback GitHub with five orgs, configured as two tokens' sources (3 + 2)."""
    app = GitHubApp(token=None)  # any token is accepted: two tokens, one host
    for org, n in PER_ORG.items():
        app.add_owner(org, n)
    with FakeCodeHost(app) as host:
        (token_a, token_b) = TOKENS
        sources = [
            *(
                {"kind": "github", "owner": o, "base_url": host.url, "token_env": token_a}
                for o in ORGS_A
            ),
            *(
                {"kind": "github", "owner": o, "base_url": host.url, "token_env": token_b}
                for o in ORGS_B
            ),
        ]
        path = tmp_path / "enum_pipeline.yaml"

        def configure(**top) -> None:
            path.write_text(yaml.safe_dump({"sources": sources, **top}))

        configure()
        configure.app = app
        monkeypatch.setenv("ENUM_PIPELINE_CONFIG", str(path))
        monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
        monkeypatch.delenv("ENUM_PIPELINE_ROOTS", raising=False)
        for name, value in TOKENS.items():
            monkeypatch.setenv(name, value)
        store = InventoryStore(db_url)
        try:
            yield configure, store
        finally:
            store.dispose()


def _tick(instance):
    context = build_schedule_context(
        instance=instance,
        resources=RESOURCES,
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return enumerate_projects_schedule.evaluate_tick(context).run_requests


def _configured():
    """The sources of the configuration in effect, and their scope keys."""
    sources = load_config().build_sources()
    return sources, [k for s in sources for k in s.scope_keys()]


def test_the_schedule_groups_scopes_per_token_in_contiguous_ranges(github, instance):
    configure, _ = github
    sources, scopes = _configured()
    keys = [partition_key(k) for k in scopes]

    per_scope = _tick(instance)  # default scopes_per_run: 1
    assert instance.get_dynamic_partitions(SCOPES_PARTITIONS) == keys
    assert [r.partition_key for r in per_scope] == keys
    assert [r.tags[SCOPE_TAG] for r in per_scope] == scopes
    assert [r.tags[PARTITION_TAG] for r in per_scope] == keys

    configure(scopes_per_run=2, parallel_sources=2)
    requests = _tick(instance)
    assert [r.partition_key for r in requests] == [None, keys[2], None]
    first, single, second = requests
    assert first.tags.items() >= run_partition_tags(keys[0:2]).items()
    assert first.tags[SCOPE_TAG] == f"{scopes[0]} +1 more"
    assert second.tags.items() >= run_partition_tags(keys[3:5]).items()
    assert second.tags[SCOPE_TAG] == f"{scopes[3]} +1 more"
    assert single.tags[SCOPE_TAG] == scopes[2]
    token_a = scope_run_tags(sources[0], scopes[0])[HOST_TOKEN_TAG]
    token_b = scope_run_tags(sources[3], scopes[3])[HOST_TOKEN_TAG]
    assert token_a != token_b
    assert [r.tags[HOST_TOKEN_TAG] for r in requests] == [token_a, token_a, token_b]
    assert len({r.run_key for r in requests}) == 3
    assert _tick(instance) == requests  # stable from tick to tick


def test_a_grouped_request_reads_all_its_scopes_in_one_run(github, instance):
    configure, store = github
    configure(scopes_per_run=3, parallel_sources=3)
    sources, scopes = _configured()
    first, second = _tick(instance)
    assert first.partition_key is None
    job = defs.resolve_job_def("enumerate_projects")
    result = job.execute_in_process(instance=instance, tags=first.tags, raise_on_error=False)
    assert result.success
    [run] = store.runs()
    read = {s.scope_key: s for s in store.scopes(run.run_id)}
    assert sorted(read) == sorted(scopes[:3])
    assert all(s.complete for s in read.values())
    by_scope = Counter(r["scope_key"] for r in store.projects())
    assert by_scope == {scope: PER_ORG[o] for scope, o in zip(scopes, ORGS_A, strict=False)}

    result = job.execute_in_process(instance=instance, tags=second.tags, raise_on_error=False)
    assert result.success
    assert store.count_projects() == sum(PER_ORG.values())


def test_an_org_whose_listing_failed_runs_alone_until_it_is_read_again(github, instance):
    """A grouped run is flushed once every scope of it is read: an org whose last reading
    failed gets a run of its own at the next tick, so its retries hold no run-mates back; read
    completely again, it rejoins its group."""
    configure, store = github
    configure(scopes_per_run=3, parallel_sources=3)
    _, scopes = _configured()
    keys = [partition_key(k) for k in scopes]
    first, _ = _tick(instance)
    job = defs.resolve_job_def("enumerate_projects")
    beta = configure.app.owners.pop("beta")  # its listing now answers 404
    assert job.execute_in_process(instance=instance, tags=first.tags, raise_on_error=False)
    read = {s.scope_key: s for s in store.scopes(store.runs()[0].run_id)}
    assert not read[scopes[1]].complete and read[scopes[0]].complete

    alpha, alone, gamma, pair = _tick(instance)
    assert [r.partition_key for r in (alpha, alone, gamma)] == keys[0:3]
    assert alone.tags[SCOPE_TAG] == scopes[1]
    assert pair.tags.items() >= run_partition_tags(keys[3:5]).items()

    configure.app.owners["beta"] = beta
    result = job.execute_in_process(instance=instance, tags=alone.tags, raise_on_error=False)
    assert result.success
    assert all(s.complete for s in store.scopes(result.run_id))
    regrouped = _tick(instance)
    assert [r.partition_key for r in regrouped] == [None, None]
    assert regrouped[0].tags.items() >= run_partition_tags(keys[0:3]).items()


def test_the_default_launchers_queue_launches_dequeued_runs_in_threads():
    """The default launcher waits for each run's process to start: dequeued one after the
    other, four runs begin seconds apart (bench/bench_queue.py)."""
    repo = Path(__file__).resolve().parents[1]
    for name in ("dagster.yaml", "deploy/dagster.postgres.yaml"):
        section = yaml.safe_load((repo / name).read_text())["run_coordinator"]
        assert section["class"] == "QueuedRunCoordinator", name
        assert section["config"] == {"dequeue_use_threads": True, "dequeue_num_workers": 4}, name
