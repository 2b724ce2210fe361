"""Real trees, two real runs through the store: a sub-tree the walk did not enter keeps its
projects (both backends).

The first run sees everything; before the second, another filesystem is mounted under the root
(or the one mounted there is no longer crossed) and a sub-folder is replaced by a symlink to
where it moved. The second run's verdict lists both as protected with their reasons, and its
cleanup removes nothing that is still on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from enum_pipeline.scan import stage_sources
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.helpers import GONE, new_run_id


def _fake_repo(path: Path) -> Path:
    (path / ".git").mkdir(parents=True)
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return path


def _run(store: InventoryStore, source: FilesystemSource):
    run_id = new_run_id()
    generation = store.begin(run_id)
    summary = stage_sources(store, run_id, generation, [source])
    store.flush(run_id)
    store.verify_and_confirm(run_id)
    assert store.complete(run_id) == "completed"
    return summary.verdicts[0], store.safe_cleanup_old_projects(run_id, witness=GONE)


def _mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def test_foreign_mount_and_symlinked_folder_keep_their_projects(store, tmp_path):
    root = tmp_path / "root"
    _fake_repo(root / "local")
    _fake_repo(root / "team" / "p1")
    mnt = root / "mnt"
    mnt.mkdir()
    if not _mount_tmpfs(mnt):
        pytest.skip("cannot mount tmpfs here (needs root)")
    try:
        _fake_repo(mnt / "p2")
        verdict, cleanup = _run(store, FilesystemSource([str(root)], one_file_system=False))
        assert verdict.complete and verdict.seen == 3 and verdict.protected == ()
        before = {r["location"] for r in store.projects()}
        assert before == {str(root / "local"), str(root / "team" / "p1"), str(mnt / "p2")}

        # the team folder moves elsewhere and a symlink takes its place
        moved = tmp_path / "elsewhere" / "team"
        moved.parent.mkdir()
        (root / "team").rename(moved)
        (root / "team").symlink_to(moved, target_is_directory=True)
        verdict, cleanup = _run(store, FilesystemSource([str(root)]))  # defaults
        assert verdict.complete and verdict.seen == 1
        assert verdict.protected_reasons == {
            str(mnt): "foreign mount",
            str(root / "team"): "symlink not followed",
        }
        assert cleanup.removed == 0 and cleanup.removed_keys == []
        assert {r["location"] for r in store.projects()} == before
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _tree(root: Path) -> None:
    for rel in ("a", "x/y/deep", "app", "app/sub/mod", "app/vendor/lib", "vendor/top"):
        _fake_repo(root / rel)


@pytest.mark.parametrize(
    ("narrowed", "unreached"),
    [
        ({"skip_names": ["vendor"]}, {"app/vendor/lib", "vendor/top"}),
        ({"max_depth": 1}, {"x/y/deep", "app/sub/mod", "app/vendor/lib", "vendor/top"}),
        ({"nested": False}, {"app/sub/mod", "app/vendor/lib"}),
    ],
    ids=["skip_names", "max_depth", "nested=False"],
)
def test_narrowed_walk_keeps_what_it_no_longer_reaches(store, tmp_path, narrowed, unreached):
    """The same root, its walk narrowed: what the walk no longer reaches is still on disk. Two
    runs in a row remove nothing, and each lists those rows as out of coverage with the rule."""
    root = tmp_path / "root"
    _tree(root)
    verdict, _ = _run(store, FilesystemSource([str(root)]))
    assert verdict.seen == 6
    everything = {r["location"] for r in store.projects()}
    gone = {str(root / rel) for rel in unreached}
    for _ in range(2):
        verdict, cleanup = _run(store, FilesystemSource([str(root)], **narrowed))
        assert verdict.complete and verdict.seen == 6 - len(gone)
        assert cleanup.removed == 0 and cleanup.would_remove == 0
        assert {r["location"] for r in store.projects()} == everything
        kept = {e.location: e for e in store.cleanup_entries(cleanup.run_id)}
        assert set(kept) == gone
        for entry in kept.values():
            assert entry.action == "keep" and entry.reason.startswith("out of coverage: ")
