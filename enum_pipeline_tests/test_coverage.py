"""outside_coverage: each rule alone, and against real walks whose settings were narrowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.sources.kinds import outside_coverage

ROOT = "/srv/src"
FS = {
    "skip_names": ["node_modules"],
    "max_depth": None,
    "nested": True,
    "one_file_system": True,
    "follow_symlinks": False,
}


def fs_row(location: str, root: str = ROOT) -> dict:
    return {"location": location, "scope_key": f"fs:{root}", "attributes": {}}


def test_filesystem_skip_names_narrowed() -> None:
    cov = {**FS, "skip_names": ["node_modules", "vendor"]}
    why = outside_coverage("filesystem", cov, fs_row(f"{ROOT}/app/vendor/lib"), [])
    assert why is not None and "'vendor'" in why
    # the project folder itself carrying the name is not entered either
    assert outside_coverage("filesystem", cov, fs_row(f"{ROOT}/vendor"), []) is not None
    assert outside_coverage("filesystem", cov, fs_row(f"{ROOT}/app/vendored/lib"), []) is None
    assert outside_coverage("filesystem", FS, fs_row(f"{ROOT}/app/vendor/lib"), []) is None


def test_filesystem_root_named_like_a_skipped_folder_is_entered() -> None:
    root = "/home/me/vendor"
    cov = {**FS, "skip_names": ["vendor"]}
    assert outside_coverage("filesystem", cov, fs_row(f"{root}/p", root), []) is None
    assert outside_coverage("filesystem", cov, fs_row(root, root), []) is None


def test_filesystem_max_depth() -> None:
    cov = {**FS, "max_depth": 2}
    assert outside_coverage("filesystem", cov, fs_row(f"{ROOT}/a/b"), []) is None
    why = outside_coverage("filesystem", cov, fs_row(f"{ROOT}/a/b/c"), [])
    assert why == "depth 3 is beyond max_depth 2"
    assert outside_coverage("filesystem", {**FS, "max_depth": 0}, fs_row(ROOT), []) is None
    assert outside_coverage("filesystem", {**FS, "max_depth": 0}, fs_row(f"{ROOT}/a"), [])


def test_filesystem_nested_false() -> None:
    cov = {**FS, "nested": False}
    locations = [f"{ROOT}/app", f"{ROOT}/app/sub/mod", f"{ROOT}/application"]
    why = outside_coverage("filesystem", cov, fs_row(f"{ROOT}/app/sub/mod"), locations)
    assert why is not None and f"nested in {ROOT}/app" in why
    assert outside_coverage("filesystem", cov, fs_row(f"{ROOT}/app"), locations) is None
    # a sibling whose name merely starts with another's is not nested in it
    assert outside_coverage("filesystem", cov, fs_row(f"{ROOT}/application"), locations) is None
    assert outside_coverage("filesystem", FS, fs_row(f"{ROOT}/app/sub/mod"), locations) is None


def test_filesystem_row_outside_the_root_is_not_judged() -> None:
    assert (
        outside_coverage("filesystem", {**FS, "max_depth": 0}, fs_row("/elsewhere/p"), []) is None
    )


def gh_row(**attrs) -> dict:
    return {"location": "acme/r", "scope_key": "github:github.com/acme", "attributes": attrs}


CODEHOST = {"visibilities": ["public"], "include_forks": True, "include_archived": True}


@pytest.mark.parametrize("kind", ["github", "gitlab", "gitea"])
def test_codehost_visibility(kind: str) -> None:
    why = outside_coverage(kind, CODEHOST, gh_row(visibility="private"), [])
    assert why == "visibility 'private'; the listing returned ['public'] only"
    assert outside_coverage(kind, CODEHOST, gh_row(visibility="internal"), [])
    assert outside_coverage(kind, CODEHOST, gh_row(visibility="public"), []) is None
    member = {**CODEHOST, "visibilities": ["internal", "private", "public"]}
    assert outside_coverage(kind, member, gh_row(visibility="private"), []) is None


def test_codehost_visibility_from_column_then_private_flag() -> None:
    # a visibility column (issue 12) wins over the attributes
    row = {**gh_row(visibility="public"), "visibility": "private"}
    assert outside_coverage("github", CODEHOST, row, [])
    assert outside_coverage("gitea", CODEHOST, gh_row(private=True), [])
    assert outside_coverage("gitea", CODEHOST, gh_row(private=False), []) is None
    # attributes stored as JSON text are read too
    text = {**gh_row(), "attributes": json.dumps({"visibility": "private"})}
    assert outside_coverage("gitlab", CODEHOST, text, [])


def test_codehost_unknown_visibility_is_outside_a_restricted_read_only() -> None:
    assert outside_coverage("github", CODEHOST, gh_row(), []) is not None
    full = {**CODEHOST, "visibilities": ["private", "public"]}
    assert outside_coverage("github", full, gh_row(), []) is None


def test_codehost_forks() -> None:
    cov = {**CODEHOST, "include_forks": False}
    assert "fork" in outside_coverage("github", cov, gh_row(visibility="public", fork=True), [])
    assert outside_coverage("github", cov, gh_row(visibility="public", fork=False), []) is None
    assert outside_coverage("github", CODEHOST, gh_row(visibility="public", fork=True), []) is None
    row = {**gh_row(visibility="public"), "fork": True}  # the column
    assert outside_coverage("gitea", cov, row, [])


def test_codehost_archived() -> None:
    cov = {**CODEHOST, "include_archived": False}
    row = gh_row(visibility="public", archived=True)
    assert "archived" in outside_coverage("gitlab", cov, row, [])
    assert outside_coverage("gitlab", CODEHOST, row, []) is None
    assert outside_coverage("gitlab", cov, gh_row(visibility="public"), []) is None


def test_gitlab_subgroups_excluded() -> None:
    cov = {**CODEHOST, "visibilities": ["public"], "include_subgroups": False}

    def row(location: str) -> dict:
        attrs = {"visibility": "public"}
        return {"location": location, "scope_key": "gitlab:gl.example/grp", "attributes": attrs}

    assert "subgroup" in outside_coverage("gitlab", cov, row("Grp/sub/proj"), [])
    assert outside_coverage("gitlab", cov, row("Grp/proj"), []) is None
    assert (
        outside_coverage("gitlab", {**cov, "include_subgroups": True}, row("Grp/sub/p"), []) is None
    )


def test_unknown_kind_could_not_have_seen_and_empty_coverage_judges_nothing() -> None:
    """Default deny: a kind without coverage rules could not have seen what it did not list."""
    why = outside_coverage("svn-server", {"max_depth": 0}, fs_row(f"{ROOT}/a/b"), [])
    assert why is not None and "svn-server" in why and "no coverage rules" in why
    assert outside_coverage("filesystem", {}, fs_row(f"{ROOT}/a/b"), []) is None
    assert outside_coverage("github", None, gh_row(visibility="private"), []) is None


# -- against real walks ----------------------------------------------------------------------


def _tree(root: Path) -> None:
    for rel in ("a", "x/y/deep", "app", "app/sub/mod", "app/vendor/lib", "vendor/top"):
        (root / rel / ".git").mkdir(parents=True)
        (root / rel / ".git" / "HEAD").write_text("ref: refs/heads/main\n")


def _walk(root: Path, **kw) -> tuple[dict[str, ProjectRecord], ScopeVerdict]:
    items = list(FilesystemSource([str(root)], **kw).scan())
    records = {i.location: i for i in items if isinstance(i, ProjectRecord)}
    return records, items[-1]


@pytest.mark.parametrize(
    "narrowed",
    [{"skip_names": ["vendor"]}, {"max_depth": 2}, {"max_depth": 1}, {"nested": False}],
    ids=["skip_names", "max_depth=2", "max_depth=1", "nested=False"],
)
def test_what_a_narrowed_walk_no_longer_sees_is_outside_its_coverage(
    tmp_path: Path, narrowed: dict
) -> None:
    """Every project of a full walk that a narrowed walk of the same root did not yield is
    outside the narrowed walk's coverage, and every project it did yield is inside it."""
    root = tmp_path / "root"
    _tree(root)
    full, _ = _walk(root)
    assert len(full) == 6
    seen, verdict = _walk(root, **narrowed)
    assert verdict.complete and 0 < len(seen) < len(full)
    locations = list(full)
    for location, rec in full.items():
        row = {"location": location, "scope_key": rec.scope_key, "attributes": rec.attributes}
        why = outside_coverage("filesystem", verdict.coverage, row, locations)
        assert (why is None) == (location in seen), (location, why)
