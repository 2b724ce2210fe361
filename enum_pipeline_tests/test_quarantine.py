"""One bad record never freezes the inventory (issue 19): a record the database cannot take is
quarantined with its reason, its scope made incomplete, and every other record and scope goes on.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import sqlalchemy as sa

from enum_pipeline import scan, steps
from enum_pipeline.sources import sanitize
from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.sanitize import KEY_MAX_BYTES, Rejected, safe_text, screen
from enum_pipeline.store import InventoryStore
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import SCOPE, StaticSource, key, new_run_id, rec, run_once

OTHER = "fs:/srv/other"


def _long_key(r: ProjectRecord) -> ProjectRecord:
    # random letters, so no compression brings it under PostgreSQL's btree limit
    noise = "".join(random.Random(19).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=3000))
    return dataclasses.replace(r, project_key=f"{r.project_key}/{noise}")


BAD = {
    "over_long_key": (_long_key, "project_key is 3"),
    "nul_in_name": (lambda r: dataclasses.replace(r, name="bad\x00name"), "name holds a NUL"),
    "nul_in_description": (
        lambda r: dataclasses.replace(r, description="one\x00two"),
        "description holds a NUL",
    ),
    "lone_surrogate_in_location": (
        lambda r: dataclasses.replace(r, location=r.location + "\ud800"),
        "location holds a lone surrogate",
    ),
    "nul_inside_attributes": (
        lambda r: dataclasses.replace(r, attributes={"notes": ["fine", "nul\x00here"]}),
        "attributes['notes'][1] holds a NUL",
    ),
    "nul_in_an_attributes_key": (
        lambda r: dataclasses.replace(r, attributes={"k\x00": 1}),
        "(key) holds a NUL",
    ),
    "stars_over_int64": (
        lambda r: dataclasses.replace(r, stars=2**63),
        "not an integer within int64",
    ),
}


def _sources(records_a: list[ProjectRecord], names_b: list[str]) -> list[StaticSource]:
    return [
        StaticSource(
            {
                SCOPE: (records_a, ScopeVerdict(SCOPE, "filesystem", True, len(records_a))),
                OTHER: (
                    [rec(n, OTHER) for n in names_b],
                    ScopeVerdict(OTHER, "filesystem", True, len(names_b)),
                ),
            }
        )
    ]


def _assert_run_goes_on(store: InventoryStore, run_id: str, good: list[str], bad: int) -> list:
    """The run completed, every good record is present and confirmed by it, ``bad`` records
    are quarantined, the scope is incomplete and its unseen project is kept by the cleanup."""
    info = store.get_run(run_id)
    assert info.status == "completed" and info.flush_succeeded, info.error
    rows = {r["project_key"]: r for r in store.projects()}
    for k in good:
        assert rows[k]["last_confirmed_run_id"] == run_id, k
    quarantined = store.quarantined(run_id)
    assert len(quarantined) == bad
    assert all(q.scope_key == SCOPE and q.reason and q.run_id == run_id for q in quarantined)
    scopes = {s.scope_key: s for s in store.scopes(run_id)}
    assert scopes[SCOPE].complete is False
    assert f"{bad} record(s) quarantined" in scopes[SCOPE].reason
    assert scopes[OTHER].complete is True
    assert info.scanned_count == len(good) + bad
    store.safe_cleanup_old_projects(run_id)
    assert key("old") in store.project_keys(), "a project of the incomplete scope was removed"
    return quarantined


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_record_is_quarantined_and_the_run_goes_on(store, kind):
    make_bad, why = BAD[kind]
    run_once(store, {SCOPE: ["old", "a", "b"], OTHER: ["x"]})
    bad = make_bad(rec("bad"))
    run_id = new_run_id()
    records = [rec("a"), bad, rec("b"), rec("c")]
    summary, verified, finished = steps.run_through(store, run_id, _sources(records, ["x", "y"]))
    assert verified.flush_succeeded and finished.status == "completed"
    good = [key(n) for n in ("a", "b", "c")] + [key(n, OTHER) for n in ("x", "y")]
    (q,) = _assert_run_goes_on(store, run_id, good, bad=1)
    assert why in q.reason, q.reason
    assert q.project_key == safe_text(bad.project_key)
    assert q.project_key.isprintable() and len(q.project_key) < 400
    assert [v.complete for v in summary.verdicts] == [False, True]
    assert summary.as_dict()["quarantined_count"] == 1
    assert summary.quarantined[0].reason == q.reason


def test_the_database_fallback_isolates_what_the_check_let_through(store, monkeypatch):
    """The pre-check lets everything through: staging bisects the batch the database turns
    back, quarantines each offending record with the database's own reason, stages the rest."""
    monkeypatch.setattr(scan, "screen", lambda r: r)
    run_once(store, {SCOPE: ["old", "a"], OTHER: ["x"]})
    good_names = [f"p{i:02d}" for i in range(20)]
    records = [rec(n) for n in good_names]
    records.insert(3, dataclasses.replace(rec("huge-stars"), stars=2**64))
    records.insert(15, dataclasses.replace(rec("surrogate"), description="x\udcff"))
    refused = {key("huge-stars"), key("surrogate")}
    if store.dialect == "postgresql":  # SQLite takes these two as they are
        records.insert(9, dataclasses.replace(rec("nul"), name="n\x00ul"))
        records.insert(1, _long_key(rec("long")))
        refused |= {key("nul"), safe_text(records[1].project_key)}
    run_id = new_run_id()
    _, verified, finished = steps.run_through(
        store, run_id, _sources(records, ["x"]), batch_size=50
    )
    assert verified.flush_succeeded and finished.status == "completed"
    good = [key(n) for n in good_names] + [key("x", OTHER)]
    quarantined = _assert_run_goes_on(store, run_id, good, bad=len(refused))
    assert {q.project_key for q in quarantined} == refused
    assert all(q.reason.startswith("the database refused it: ") for q in quarantined)
    assert store.get_run(run_id).staged_count == len(good)


def test_a_value_staging_cannot_even_render_is_quarantined(store):
    """A value the pre-check does not look at (a timestamp that is not one) fails building its
    row: that record alone is quarantined."""
    run_once(store, {SCOPE: ["old"], OTHER: ["x"]})
    bad = dataclasses.replace(rec("bad"), last_commit_at="yesterday")
    run_id = new_run_id()
    steps.run_through(store, run_id, _sources([rec("a"), bad], ["x"]))
    (q,) = _assert_run_goes_on(store, run_id, [key("a"), key("x", OTHER)], bad=1)
    assert q.reason.startswith("its row cannot be built: AttributeError")


def test_a_quarantine_after_its_scope_ended_makes_the_scope_incomplete(store):
    run_id = new_run_id()
    store.begin(run_id)
    store.stage(run_id, [rec("a")])
    assert store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", True, 2)).complete
    assert store.quarantine(run_id, [(rec("late\x00"), "name holds a NUL character at 4")]) == 1
    (scope,) = store.scopes(run_id)
    assert not scope.complete
    assert "1 record(s) quarantined" in scope.reason and "late\\x00" in scope.reason


def test_a_scope_reason_names_the_first_few_keys_and_how_many_more(store):
    run_id = new_run_id()
    store.begin(run_id)
    store.quarantine(run_id, [(rec(f"b{i}"), "bad") for i in range(5)])
    recorded = store.end_scope(run_id, ScopeVerdict(SCOPE, "filesystem", False, 5, "rate limit"))
    assert not recorded.complete
    assert recorded.reason.startswith("rate limit; 5 record(s) quarantined")
    assert key("b2") in recorded.reason and key("b3") not in recorded.reason
    assert "and 2 more" in recorded.reason


# ---------------------------------------------------------------------------- the pre-check alone


def test_screen_passes_good_records_as_they_are():
    good = [
        rec("plain"),
        rec("ünïcödé", description="naïve — 🚀", topics=("a", "b")),
        rec("nan-in-text", description="NaN handling, a literal \\u0000", attributes={"x": "NaN"}),
        rec("nested", attributes={"a": {"b": [1, 2.5, None, True]}}, remotes={"o": "u"}),
        dataclasses.replace(rec("edge", stars=2**63 - 1), project_key="fs:/" + "é" * 1022),
    ]
    for r in good:
        assert screen(r) is r


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"attributes": {"x": float("inf")}}, "attributes['x'] is inf, not a JSON number"),
        ({"remotes": {"origin": "u\x00"}}, "remotes['origin'] holds a NUL"),
        ({"topics": ("ok", "\ud800")}, "topics[1] holds a lone surrogate"),
        ({"markers": ("m\x00",)}, "markers[0] holds a NUL"),
        ({"vcs": "x" * 17}, "vcs is 17 characters"),
        ({"stars": "many"}, "stars 'many' is not an integer"),
        ({"name": None}, "name is NoneType, not text"),
        ({"scope_key": "fs:/" + "s" * KEY_MAX_BYTES}, "scope_key is 2052 UTF-8 bytes"),
    ],
)
def test_screen_names_the_field_and_why(change, reason):
    out = screen(dataclasses.replace(rec("r"), **change))
    assert isinstance(out, Rejected) and out.reason.startswith(reason), out


def test_bounded_lengths_match_the_schema():
    for name, limit in sanitize.BOUNDED.items():
        assert t.staged_projects.c[name].type.length == limit
    texts = set(sanitize.REQUIRED_TEXT + sanitize.OPTIONAL_TEXT)
    json_columns = set(sanitize.JSON_FIELDS)
    for column in t.staged_projects.columns:
        if isinstance(column.type, sa.String) and column.name != "run_id":
            assert column.name in texts, column.name
        if isinstance(column.type, sa.JSON):
            assert column.name in json_columns, column.name


def test_safe_text_escapes_and_cuts():
    assert safe_text("a\x00b\ud800c") == "a\\x00b\\ud800c"
    long = safe_text("k" * 5000)
    assert long.endswith("… (5000 bytes)") and len(long) < 320


# ------------------------------------------------------------------------ the operator's surface


def test_runs_shows_the_count_and_the_first_few_with_their_reasons(
    store, db_url, monkeypatch, capsys
):
    from enum_pipeline import cli

    monkeypatch.setenv("ENUM_PIPELINE_DATABASE_URL", db_url)
    records = [rec("a")] + [dataclasses.replace(rec(f"bad{i}"), name=f"b\x00{i}") for i in range(5)]
    run_id = new_run_id()
    steps.run_through(store, run_id, _sources(records, ["x"]))
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "quarantined=5" in out, out
    assert f"  quarantined {key('bad0')} — name holds a NUL character at 1" in out
    assert key("bad2") in out and key("bad3") not in out
    assert f"… 2 more: enum-pipeline runs --quarantined {run_id}" in out
    assert cli.main(["runs", "--quarantined", run_id]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in listed] == [key(f"bad{i}") for i in range(5)]


def test_scanned_projects_metadata_lists_them_capped():
    from datetime import UTC, datetime

    from enum_pipeline.defs.enumeration import QUARANTINE_LISTED, _quarantine_md
    from enum_pipeline.scan import ScanSummary
    from enum_pipeline.store import QuarantinedRecord

    now = datetime.now(UTC)
    summary = ScanSummary("r1", 1)
    assert _quarantine_md(summary).value == "none"
    summary.quarantined = [
        QuarantinedRecord(i, "r1", SCOPE, key(f"k{i}"), "filesystem", "name | holds a NUL", now)
        for i in range(QUARANTINE_LISTED + 5)
    ]
    text = _quarantine_md(summary).value
    assert f"| {SCOPE} | {key('k0')} | name \\| holds a NUL |" in text
    assert key(f"k{QUARANTINE_LISTED}") not in text
    assert "5 more: `enum-pipeline runs --quarantined r1`" in text
