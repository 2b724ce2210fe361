"""Absence is confirmed, never inferred: a project goes only when its source's witness, looking at
it directly after the run's read, confirms it gone (issue 19).

Real git checkouts and real walks for the filesystem; the loopback fakes of the code hosts for
the repository-by-id look; the store on both backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest

from enum_pipeline import steps
from enum_pipeline.sources import filesystem as fs_module
from enum_pipeline.sources.base import ProjectRecord
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.sources.witness import (
    Absence,
    Candidate,
    Confirmation,
    SourceWitness,
    filesystem_absence,
)
from enum_pipeline.store import CleanupPolicy, InventoryStore
from enum_pipeline_tests.conftest import IN_CI
from enum_pipeline_tests.fake_codehosts import FakeCodeHost, FakeSleep
from enum_pipeline_tests.helpers import make_repo, new_run_id
from enum_pipeline_tests.test_codehost_contract import HOSTS, TOKEN, TOKEN_ENV, Host

LOOSE = CleanupPolicy(max_delete_count=None, max_delete_fraction=None, allow_empty=True)


def _run(store: InventoryStore, sources, policy: CleanupPolicy = LOOSE) -> str:
    run_id = new_run_id()
    _, verified, finished = steps.run_through(store, run_id, sources, policy=policy)
    assert verified.flush_succeeded and finished.status == "completed", finished.info.error
    return run_id


@pytest.fixture
def store(db_url):
    s = InventoryStore(db_url)
    yield s
    s.dispose()


def _tree(tmp_path: Path, names=("a", "b", "c")) -> Path:
    root = tmp_path / "root"
    for name in names:
        make_repo(root / name)
    return root


def _entry(result, key: str):
    return next(e for e in result.entries if e.project_key == key)


# -- filesystem -------------------------------------------------------------------------------


def test_a_deleted_checkout_is_removed_with_its_witness_named(store, tmp_path) -> None:
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    shutil.rmtree(root / "b")
    run_id = _run(store, [source])
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    key = f"fs:{os.path.realpath(root / 'b')}"
    assert result.status == "done" and result.removed_keys == [key]
    device = os.stat(root).st_dev
    entry = _entry(result, key)
    assert entry.action == "remove" and f"absent on device {device}" in entry.confirmation
    assert "confirmed gone" in entry.reason
    [removed] = store.history(run_id)
    assert removed.confirmation == entry.confirmation
    assert removed.confirmed_at > store.get_run(run_id).finished_at
    persisted = {e.project_key: e for e in store.cleanup_entries(run_id)}
    assert persisted[key].confirmation == entry.confirmation


def test_without_a_witness_nothing_is_removed(store, tmp_path) -> None:
    """Default deny: no witness, no removal; the row is kept marked missing, with why."""
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    shutil.rmtree(root / "b")
    run_id = _run(store, [source])
    result = store.safe_cleanup_old_projects(run_id)
    key = f"fs:{os.path.realpath(root / 'b')}"
    assert result.removed == 0 and result.would_remove == 0 and result.unconfirmed == 1
    assert key in store.project_keys()
    entry = _entry(result, key)
    assert entry.action == "mark_missing" and "no witness" in entry.reason


def test_a_checkout_the_walk_missed_is_kept_because_its_path_exists(
    store, tmp_path, monkeypatch
) -> None:
    """Whatever the walk said, a path that still exists is never removed."""
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    listed = fs_module._RootWalk._list

    def blind_to_b(self, path, depth):  # a walk that is wrong, and says it is complete
        got = listed(self, path, depth)
        if got is None or depth != 0:
            return got
        names, subdirs, links = got
        return [n for n in names if n != "b"], [n for n in subdirs if n != "b"], links

    monkeypatch.setattr(fs_module._RootWalk, "_list", blind_to_b)
    run_id = _run(store, [source])
    assert all(s.complete for s in store.scopes(run_id))
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    key = f"fs:{os.path.realpath(root / 'b')}"
    assert result.removed == 0 and result.found_present == 1 and key in store.project_keys()
    entry = _entry(result, key)
    assert entry.action == "keep" and "exists" in entry.reason and str(root / "b") in entry.reason


def test_a_checkout_behind_a_symlink_whose_target_went_away_is_kept(store, tmp_path) -> None:
    """A sub-folder reached through a symlink (a share) whose target dangles is walked as
    empty: the checkouts behind it are kept."""
    root = tmp_path / "root"
    share = tmp_path / "share"
    make_repo(root / "local")
    make_repo(share / "proj")
    (root / "share").symlink_to(share, target_is_directory=True)
    source = FilesystemSource([str(root)], follow_symlinks=True)
    _run(store, [source])
    key = f"fs:{os.path.realpath(share / 'proj')}"
    assert key in store.project_keys()
    share.rename(tmp_path / "share-unmounted")
    run_id = _run(store, [source])
    assert all(s.complete for s in store.scopes(run_id))
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    assert key in store.project_keys(), result.entries
    entry = _entry(result, key)
    assert entry.action == "mark_missing" and "dangling" in entry.reason


@pytest.fixture
def mounted(tmp_path):
    """A real tmpfs mounted below a root (a share); unmounted by the test or at the end."""
    point = tmp_path / "root" / "share"
    point.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "enum-test", str(point)], capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield point
    subprocess.run(["umount", str(point)], capture_output=True)


def test_a_share_that_is_not_mounted_keeps_its_checkouts(store, mounted) -> None:
    """``one_file_system: false``: a share mounted below a root and not mounted at the next run
    leaves an empty folder, the walk is complete, and still its projects stay."""
    root = mounted.parent
    make_repo(root / "local")
    make_repo(mounted / "proj")
    source = FilesystemSource([str(root)], one_file_system=False)
    _run(store, [source])
    key = f"fs:{os.path.realpath(mounted / 'proj')}"
    [row] = [r for r in store.projects() if r["project_key"] == key]
    assert row["attributes"]["device"] == os.stat(mounted).st_dev != os.stat(root).st_dev
    assert row["attributes"]["mount_point"] == str(mounted)
    subprocess.run(["umount", str(mounted)], check=True)
    run_id = _run(store, [source])
    assert all(s.complete for s in store.scopes(run_id))
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    assert key in store.project_keys() and result.removed == 0
    assert "a mount that went away" in _entry(result, key).reason


def test_the_filesystem_witness_rules(tmp_path) -> None:
    """The direct look itself: gone only when the path is absent on the device it lived on."""
    here = tmp_path / "gone"
    dev = os.stat(tmp_path).st_dev

    def look(location: str, **kw) -> Confirmation:
        c = Candidate(f"fs:{location}", f"fs:{tmp_path}", "filesystem", "x", location, **kw)
        return filesystem_absence(c)

    gone = look(str(here), attributes={"device": dev})
    assert gone.answer == Absence.GONE and f"absent on device {dev}" in gone.evidence
    other = look(str(here), attributes={"device": dev + 7})
    assert other.answer == Absence.UNKNOWN and "a mount that went away" in other.evidence
    unrecorded = look(str(here), coverage={"one_file_system": False}, identity={"st_dev": dev})
    assert unrecorded.answer == Absence.UNKNOWN and "not recorded" in unrecorded.evidence
    # a walk kept on one file system vouches for the root's device
    assert (
        look(str(here), coverage={"one_file_system": True}, identity={"st_dev": dev}).answer
        == Absence.GONE
    )
    (tmp_path / "exists").mkdir()
    assert look(str(tmp_path / "exists"), attributes={"device": dev}).answer == Absence.PRESENT
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    dangling = look(str(tmp_path / "link" / "proj"), attributes={"device": dev})
    assert dangling.answer == Absence.UNKNOWN and "dangling" in dangling.evidence
    (tmp_path / "file").write_text("x")
    under_file = look(str(tmp_path / "file" / "proj"), attributes={"device": dev})
    assert under_file.answer == Absence.UNKNOWN


def test_an_unreadable_configuration_keeps_code_host_rows_and_says_so_once(tmp_path) -> None:
    """With no configuration (an ad hoc ``--root`` run's cleanup), a checkout is still looked
    at and nothing is said; a code-host row is kept with the configuration's error, said once
    however many rows need a witness."""
    said: list[str] = []
    witness = SourceWitness(config_error="no sources configured", warn=said.append)
    dev = os.stat(tmp_path).st_dev
    gone = Candidate(
        f"fs:{tmp_path}/gone", f"fs:{tmp_path}", "filesystem", "gone", str(tmp_path / "gone"),
        attributes={"device": dev},
    )  # fmt: skip
    assert [c.answer for c in witness.confirm([gone])] == [Absence.GONE]
    assert said == []
    hosted = [
        Candidate(f"github:h:acme/{n}", "github:h:acme", "github", n, f"https://h/acme/{n}")
        for n in ("a", "b")
    ]
    answers = list(witness.confirm(hosted))
    assert [a.answer for a in answers] == [Absence.UNKNOWN, Absence.UNKNOWN]
    assert all("no sources configured" in a.evidence for a in answers)
    assert len(said) == 1 and "their rows are kept" in said[0]


def test_confirmations_are_bounded_and_the_rest_wait(store, tmp_path) -> None:
    root = _tree(tmp_path, names=("a", "b", "c", "d"))
    source = FilesystemSource([str(root)])
    budget = LOOSE.model_copy(update={"confirm_budget": 1})
    _run(store, [source], budget)
    for name in ("b", "c", "d"):
        shutil.rmtree(root / name)
    run_id = _run(store, [source], budget)
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    assert result.removed == 1 and result.unconfirmed == 2
    waiting = [e for e in result.entries if e.action == "mark_missing"]
    assert len(waiting) == 2 and all("confirmation budget (1)" in e.reason for e in waiting)
    again = _run(store, [source], budget)
    assert store.safe_cleanup_old_projects(again, witness=SourceWitness([source])).removed == 1
    assert len(store.project_keys()) == 2


class _Raising:
    def confirm(self, candidates):
        raise TimeoutError("the share is not answering")


class _Stale:
    def confirm(self, candidates):
        for c in candidates:
            yield Confirmation(
                c.project_key, Absence.GONE, "an old look", datetime(2001, 1, 1, tzinfo=UTC)
            )


class _StalePresent:
    """An old look that found the project, with the facts it had then."""

    def confirm(self, candidates):
        for c in candidates:
            yield Confirmation(
                c.project_key,
                Absence.PRESENT,
                "an old look found it",
                datetime(2001, 1, 1, tzinfo=UTC),
                updates={"name": "renamed-long-ago"},
            )


def test_an_old_look_that_found_the_project_is_no_answer_either(store, tmp_path) -> None:
    """A confirmation older than the run's read says nothing of what the read missed, either
    way: the row is kept marked missing (as with no answer), and the old look's facts are not
    written over the row (the model test found the store taking it as found present)."""
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    shutil.rmtree(root / "b")
    run_id = _run(store, [source])
    result = store.safe_cleanup_old_projects(run_id, witness=_StalePresent())
    assert (result.removed, result.unconfirmed, result.found_present) == (0, 1, 0)
    [entry] = [e for e in result.entries if e.action == "mark_missing"]
    assert "before the run's read ended" in entry.reason
    assert "renamed-long-ago" not in {r["name"] for r in store.projects()}


@pytest.mark.parametrize("witness", [_Raising(), _Stale()], ids=["raises", "stale"])
def test_a_failing_or_stale_witness_removes_nothing(store, tmp_path, witness) -> None:
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    shutil.rmtree(root / "b")
    run_id = _run(store, [source])
    result = store.safe_cleanup_old_projects(run_id, witness=witness)
    assert result.removed == 0 and result.unconfirmed == 1 and len(store.project_keys()) == 3
    [entry] = [e for e in result.entries if e.action == "mark_missing"]
    assert (
        ("failed" in entry.reason)
        if isinstance(witness, _Raising)
        else ("before the run's read ended" in entry.reason)
    )


def test_a_dry_run_lists_only_confirmed_removals_as_would_remove(store, tmp_path) -> None:
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    _run(store, [source])
    shutil.rmtree(root / "b")
    run_id = _run(store, [source])
    dry = store.safe_cleanup_old_projects(run_id, dry_run=True, witness=SourceWitness([source]))
    assert dry.would_remove == 1 and dry.removed == 0 and len(store.project_keys()) == 3
    blind = store.safe_cleanup_old_projects(run_id, dry_run=True)
    assert blind.would_remove == 0


# -- code hosts -------------------------------------------------------------------------------


class _Missing:
    """A source whose listing misses one repository and still calls itself complete."""

    def __init__(self, source, missed: str) -> None:
        self.source, self.missed, self.kind = source, missed, source.kind

    def scope_keys(self):
        return self.source.scope_keys()

    def scan(self):
        for item in self.source.scan():
            if not (isinstance(item, ProjectRecord) and item.project_key == self.missed):
                yield item


def _serve(kind: Host, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = kind.new_app(token=TOKEN)
    items = kind.populate(app, 12)
    with FakeCodeHost(app) as served:
        yield kind, app, served, items


@pytest.fixture(params=HOSTS, ids=[h.name for h in HOSTS])
def host(request, monkeypatch):
    yield from _serve(request.param, monkeypatch)


FILTERING = [h for h in HOSTS if h.name in ("github", "gitlab")]  # with include_archived


@pytest.fixture(params=FILTERING, ids=[h.name for h in FILTERING])
def filtering_host(request, monkeypatch):
    yield from _serve(request.param, monkeypatch)


def _key(kind: Host, served, item) -> str:
    return kind.project_key(served.host, item)


def _source(kind: Host, served, **kw):
    return kind.make(served, sleep=FakeSleep(), **kw)


def _delete(kind: Host, app, item) -> None:
    kind.delete(app, item)


def test_a_deleted_repository_is_removed_on_a_not_found_by_id(store, host) -> None:
    kind, app, served, items = host
    _run(store, [_source(kind, served)])
    victim = items[5]
    _delete(kind, app, victim)
    run_id = _run(store, [_source(kind, served)])
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([_source(kind, served)]))
    key = _key(kind, served, victim)
    assert result.removed_keys == [key]
    entry = _entry(result, key)
    assert "not found: GET" in entry.confirmation and kind.key_id(victim) in unquote(
        entry.confirmation
    )
    assert store.history(run_id)[0].confirmation == entry.confirmation


def test_a_repository_the_listing_missed_is_kept_when_found_by_id(store, host) -> None:
    """A listing that skipped one (an offset page shifted under it) and still looked complete."""
    kind, app, served, items = host
    _run(store, [_source(kind, served)])
    missed = _key(kind, served, items[3])
    run_id = _run(store, [_Missing(_source(kind, served), missed)])
    assert all(s.complete for s in store.scopes(run_id))
    result = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([_source(kind, served)]))
    assert result.removed == 0 and result.found_present == 1 and missed in store.project_keys()
    assert "found: GET" in _entry(result, missed).reason


def test_an_anonymous_not_found_confirms_nothing(store, host) -> None:
    kind, app, served, items = host
    public = [i for i in items if not kind.is_private(i)]
    _run(store, [_source(kind, served, token_env=None)])
    victim = public[0]
    _delete(kind, app, victim)
    run_id = _run(store, [_source(kind, served, token_env=None)])
    result = store.safe_cleanup_old_projects(
        run_id, witness=SourceWitness([_source(kind, served, token_env=None)])
    )
    key = _key(kind, served, victim)
    assert result.removed == 0 and key in store.project_keys()
    assert "anonymous read cannot tell" in _entry(result, key).reason


def test_a_server_error_by_id_keeps_the_row(store, host) -> None:
    kind, app, served, items = host
    _run(store, [_source(kind, served)])
    victim = items[2]
    _delete(kind, app, victim)
    run_id = _run(store, [_source(kind, served)])
    original = app.route

    def failing(req, host_name):
        if kind.key_id(victim) in unquote(req.path.split("?")[0].rsplit("/", 1)[-1]):
            from enum_pipeline_tests.fake_codehosts import Reply

            return Reply.json(403, {"message": "Forbidden"})
        return original(req, host_name)

    app.route = failing
    result = store.safe_cleanup_old_projects(
        run_id, witness=SourceWitness([_source(kind, served, max_retries=0)])
    )
    key = _key(kind, served, victim)
    assert result.removed == 0 and key in store.project_keys()
    assert "403" in _entry(result, key).reason


def test_an_archived_repository_filtered_out_is_kept_out_of_coverage_and_updated(
    store, filtering_host
) -> None:
    """Judged by the witness's fresh answer, not the stored row that still says not archived."""
    kind, app, served, items = filtering_host
    live = [i for i in items if not i.get("archived")]
    _run(store, [_source(kind, served, include_archived=False)])
    victim = live[0]
    victim["archived"] = True
    run_id = _run(store, [_source(kind, served, include_archived=False)])
    result = store.safe_cleanup_old_projects(
        run_id, witness=SourceWitness([_source(kind, served, include_archived=False)])
    )
    key = _key(kind, served, victim)
    assert result.removed == 0 and key in store.project_keys()
    entry = _entry(result, key)
    assert entry.action == "keep" and "out of coverage: archived" in entry.reason
    [row] = [r for r in store.projects() if r["project_key"] == key]
    assert row["archived"] is True and row["out_of_coverage_reason"].startswith("archived")


def test_every_configured_kind_carries_its_facts() -> None:
    """Coverage rules, filled columns and how to confirm absence live on each source kind."""
    from typing import get_args

    from enum_pipeline.config import SourceConfig
    from enum_pipeline.sources.kinds import COVERAGE_RULES, FILLED_COLUMNS

    union = get_args(SourceConfig)[0] if get_args(SourceConfig) else SourceConfig
    models = get_args(union) or (union,)
    assert len(models) >= 4
    for model in models:
        kind = get_args(model.model_fields["kind"].annotation)[0]
        cls = FilesystemSource if kind == "filesystem" else model.source
        assert cls.kind == kind
        assert cls.filled_columns == FILLED_COLUMNS[kind]
        assert cls.coverage_rule is COVERAGE_RULES[kind]
        assert callable(cls.confirm_absence)


def test_a_dry_run_of_a_cleanup_already_carried_out_still_asks_the_witness(store, tmp_path):
    """The model test found it: a dry run re-plans a finished cleanup, so its due rows must be
    looked at too, or it shows nothing it would remove."""
    root = _tree(tmp_path)
    source = FilesystemSource([str(root)])
    grace = LOOSE.model_copy(update={"missing_runs_before_delete": 2})
    _run(store, [source], grace)
    shutil.rmtree(root / "b")
    run_id = _run(store, [source], grace)
    first = store.safe_cleanup_old_projects(run_id, witness=SourceWitness([source]))
    assert first.status == "done" and first.marked_missing == 1 and first.removed == 0
    dry = store.safe_cleanup_old_projects(run_id, dry_run=True, witness=SourceWitness([source]))
    assert dry.would_remove == 1, dry.entries
