"""The proof, part 1: a model-based test of the store against invariants I1–I9 of DESIGN.md.

A hypothesis state machine keeps a pure-Python model of the world (which projects exist in three
scopes; they appear, disappear and return) and of the inventory the store must hold. Its rules
run whole enumeration runs the way the Dagster steps do (begin → stage in batches → end_scope →
flush → verify → complete → cleanup), with random scope verdicts (complete, unreadable,
complete with a protected sub-folder, partial read flagged incomplete, not read at all), a fault
injected at a random store step (``helpers.fail_on_sql``: the statement raises, its transaction
rolls back), right after a step committed (the op crashes), or inside the database (a trigger
silently drops an inserted row: ``helpers.install_fault("lose_write")``), and the failure path
of the steps (``store.fail`` / ``fail_attempt``), plus ``prune_staging`` after completion as the
``run_state`` asset does. Other rules: late cleanups of older runs (also while a run is active),
cleanup re-runs, approvals of blocked cleanups, restores, runs abandoned without ``fail`` (taken
over by the next ``begin`` once the heartbeat expired or, on PostgreSQL, at once when the
holder's database session ends; or reaped), re-execution from failure (``resume``), a
different filesystem mounted at a root (``st_dev`` identity: the scope is held until the old
device returns or an operator accepts it), a configuration that narrows a root's coverage
(``skip_names: [vendor]``), each run beginning with its own cleanup policy. After every store
call the database is checked against I1–I8 (I7: no row outside the run's coverage is removed;
I8: the guard and grace are the run's own policy, whatever the request passes), then against the
model's prediction of every row, run status, cleanup record and history entry; I9 (a run with a
fresh heartbeat is neither taken over nor reaped) wherever a begin or a reap meets one.

The parts: ``model_oracle.py`` (the pure model, no store), ``model_invariants.py`` (one check
function per invariant and the database snapshot they read), ``model_machine.py`` (the state
machine driving the store and the model, checking the invariants after every store call), this
file (the hypothesis settings and the tests).

Run more (``ENUM_PIPELINE_MODEL_STEPS`` sets the rules per example)::

    ENUM_PIPELINE_MODEL_EXAMPLES=500 .venv/bin/pytest enum_pipeline_tests/test_model_based.py -s
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from enum_pipeline.sources.base import ScopeVerdict
from enum_pipeline_tests.helpers import GONE, SCOPE, key, new_run_id, rec, run_once
from enum_pipeline_tests.model_machine import STATS, InventoryMachine

EXAMPLES = int(os.environ.get("ENUM_PIPELINE_MODEL_EXAMPLES", "80"))
STEPS = int(os.environ.get("ENUM_PIPELINE_MODEL_STEPS", "25"))


def _settings() -> settings:
    settings.register_profile(
        "enum_pipeline_model",
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    return settings.get_profile("enum_pipeline_model")


def _pg_schema_factory(pg_database):
    admin = sa.create_engine(pg_database)

    def make() -> str:
        schema = f"m_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = pg_database.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(url: str) -> None:
        schema = sa.engine.make_url(url).query["options"].split("=", 1)[1]
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    return make, drop, admin


@pytest.mark.timeout(max(1800, EXAMPLES * 20))  # shrinking a failure may take minutes
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_matches_the_model_and_keeps_every_invariant(backend, request, tmp_path):
    STATS[backend] = Counter()
    attrs: dict[str, Any] = {"backend": backend}
    admin = None
    if backend == "sqlite":
        counter = iter(range(10**9))
        attrs["make_url"] = staticmethod(
            lambda: f"sqlite:///{tmp_path / f'model_{next(counter)}.sqlite'}"
        )
    else:
        make, drop, admin = _pg_schema_factory(request.getfixturevalue("pg_database"))
        attrs["make_url"], attrs["drop_url"] = staticmethod(make), staticmethod(drop)
    machine = type(f"InventoryMachine_{backend}", (InventoryMachine,), attrs)
    try:
        run_state_machine_as_test(machine, settings=_settings())
    finally:
        if admin is not None:
            admin.dispose()
        print(_summary(backend, STATS[backend]))


@pytest.mark.parametrize("newer_run", ["still scanning", "died before its flush"])
def test_late_cleanup_keeps_a_project_that_a_newer_run_has_scanned(store, newer_run):
    """The model's I1/I5 finding, pinned: an older run that did not see ``b`` completes, ``b``
    comes back and a newer run's scan stages it; the older run's late cleanup must keep ``b``
    (a newer run has seen it), whether the newer run is still going or died before flushing."""
    run_once(store, {SCOPE: ["a", "b"]})
    older, _ = run_once(store, {SCOPE: ["a"]}, cleanup=False)
    newer = new_run_id()
    store.begin(newer)
    store.stage(newer, [rec("a"), rec("b")])
    store.end_scope(newer, ScopeVerdict(SCOPE, "filesystem", True, 2))
    if newer_run == "died before its flush":
        store.fail(newer, "killed before its flush")
    result = store.safe_cleanup_old_projects(older, witness=GONE)
    assert key("b") in store.project_keys(), (
        f"the late cleanup of {older} removed {result.removed_keys}, which newer run {newer} "
        "had already scanned"
    )
    assert store.history() == []


def _summary(backend: str, s: Counter) -> str:
    faults = s["faults_sql"] + s["faults_after_commit"] + s["lost_writes_caught"]
    repeated = s["cleanup_already_done"] + s["cleanup_already_noop"]
    dry = sum(v for k, v in s.items() if k.startswith("cleanup_dry_"))
    points = ", ".join(f"{k[6:]}={v}" for k, v in sorted(s.items()) if k.startswith("fault:"))
    return (
        f"\nMODEL: backend={backend} examples={s['examples']} steps={s['steps']} "
        f"store_calls={s['store_calls']} faults={faults} lost={s['lost']}\n"
        f"  faults: sql={s['faults_sql']} after_commit={s['faults_after_commit']} "
        f"lost_write={s['lost_writes_caught']} (armed but SQL not on the path: "
        f"{s['faults_not_reached']}); abandoned={s['abandoned']} takeovers={s['takeovers']} "
        f"(lease freed: {s['lease_takeovers']})\n"
        f"  runs={s['runs']} completed={s['runs_completed']} resumed={s['resumed']} "
        f"concurrent={s['concurrent_runs']} scope_refused={s['scope_refused']} "
        f"cleanups={s['cleanups']}: done={s['cleanup_done']} blocked={s['cleanup_blocked']} "
        f"noop={s['cleanup_noop']} repeated={repeated} dry={dry} "
        f"refused={s['cleanups_refused']} approvals={s['approvals']} "
        f"removed_rows={s['removed_rows']} restores={s['restores']} "
        f"restored_rows={s['restored_rows']} "
        f"remounts={s['remounts']} acceptances={s['acceptances']} "
        f"narrowings={s['narrowings']} out_of_coverage_kept={s['out_of_coverage_kept']} "
        f"held_kept={s['held_kept']} prunes={s['prunes']} "
        f"cleanup_retries={s['cleanup_retries']}\n"
        f"  faults by step: {points}"
    )
