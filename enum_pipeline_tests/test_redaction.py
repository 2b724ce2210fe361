"""No credential from a git value reaches any output (issue 19, part 5).

Distinctive secrets are planted in every git config key that can hold a URL (remote ``url`` and
``pushurl``, ``branch.<name>.remote`` as a URL, ``url.<base>.insteadOf`` / ``pushInsteadOf`` on
both sides, ``credential.*``, submodule URLs in ``.gitmodules`` and ``.git/config``), in an hg
``hgrc`` and in a ``HEAD`` naming a URL; a whole run goes through the store on both backends,
then every output is searched: every row of every table, the records and verdicts, the logs,
stdout/stderr and every file under the database's folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from enum_pipeline import steps
from enum_pipeline.sources.filesystem import FilesystemSource
from enum_pipeline.sources.remotes import redact_url
from enum_pipeline.store import InventoryStore
from enum_pipeline_tests.helpers import git, make_repo, new_run_id

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="git not installed"),
    pytest.mark.timeout(120),
]

SECRETS = ("ghp_SECRET123", "glpat-SECRET456", "hunter2pass")
GH = "https://ghp_SECRET123@github.com/acme"
GL = "https://oauth2:glpat-SECRET456@gitlab.com/acme"
USERPASS = "https://user:hunter2pass@example.com/acme"
SCP = "user:hunter2pass@git.example.com:acme"


def _config(repo: Path, *pairs: tuple[str, str]) -> None:
    for k, v in pairs:
        git(repo, "config", "--add", k, v)


def _plant(root: Path) -> None:
    """Repositories whose configs hold the secrets in every key that can hold a URL."""
    one = make_repo(root / "one", remote=f"{GH}/one.git")
    _config(
        one,
        ("remote.origin.pushurl", f"{USERPASS}/one.git"),
        ("remote.gl.url", f"{GL}/one.git?private_token=glpat-SECRET456"),
        ("remote.gl.pushurl", f"{GL}/one-push.git"),
        ("remote.scp.url", f"{SCP}/one.git"),
        ("branch.main.remote", f"{GH}/one.git"),  # a URL, not a remote name
        ("branch.main.merge", "refs/heads/main"),
        (f"url.{GH}/.insteadOf", "gh:"),
        ("url.https://mirror.example.com/.insteadOf", f"{GL}/"),
        (f"url.{USERPASS}/.pushInsteadOf", "https://example.com/acme/"),
        ("url.https://push.example.com/.pushInsteadOf", f"{SCP}/"),
        ("credential.helper", "store --file=/tmp/ghp_SECRET123"),
        ("credential.https://github.com.username", "ghp_SECRET123"),
        ("credential.https://gitlab.com.password", "glpat-SECRET456"),
        ("submodule.lib.url", f"{GH}/lib.git"),
        ("http.https://github.com.extraheader", "AUTHORIZATION: bearer ghp_SECRET123"),
    )
    (one / ".gitmodules").write_text(
        f'[submodule "lib"]\n\tpath = lib\n\turl = {GL}/lib.git\n'
        f'[submodule "vendored"]\n\tpath = vendored\n\turl = {SCP}/vendored.git\n'
    )
    # a quoted, escaped config: the full parser's path, with the branch remote in scp form
    two = make_repo(root / "two")
    with open(two / ".git/config", "a") as fh:
        fh.write(
            f'[remote "origin"]\n\turl = "{USERPASS}/two.git" ; a comment\n'
            f'[remote "{GH}/weird"]\n\turl = {GL}/weird.git\n'
            f'[branch "main"]\n\tremote = "{SCP}/two.git"\n\tmerge = refs/heads/main\n'
        )
    # a checkout whose branch tracks a remote-tracking ref, in an old-style section
    three = make_repo(root / "three", remote=f"{SCP}/three.git")
    git(three, "update-ref", "refs/remotes/origin/main", "HEAD")
    _config(three, ("branch.main.remote", "origin"), ("branch.main.merge", "refs/heads/main"))
    # HEAD naming a URL (an invalid ref: its error text must not carry the secret either)
    four = make_repo(root / "four", remote=f"{GL}/four.git")
    (four / ".git/HEAD").write_text(f"ref: {GH}/four.git\n")
    # a bare repository and a Mercurial checkout
    git(root, "clone", "-q", "--bare", str(one), "bare.git")
    _config(root / "bare.git", ("remote.origin.url", f"{GH}/bare.git"))
    (root / "hgproj" / ".hg").mkdir(parents=True)
    (root / "hgproj" / ".hg" / "hgrc").write_text(f"[paths]\ndefault = {USERPASS}/hg\n")


def _dump(store: InventoryStore) -> str:
    """Every row of every table, as text."""
    out = []
    with store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {tuple(row)!r}")
    return "\n".join(out)


def _files_text(folder: Path) -> str:
    out = []
    for dirpath, _, files in os.walk(folder):
        for name in files:
            out.append(Path(dirpath, name).read_bytes().decode("latin-1"))
    return "\n".join(out)


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_redact_url_forms():
    assert redact_url(f"{GH}/r.git") == "https://***@github.com/acme/r.git"
    assert redact_url(f"{USERPASS}/r") == "https://***@example.com/acme/r"
    assert redact_url(f"{SCP}/r.git") == "***@git.example.com:acme/r.git"
    assert redact_url("git@github.com:acme/r.git") == "git@github.com:acme/r.git"
    assert "glpat" not in redact_url(f"{GL}/r.git?private_token=glpat-SECRET456")


def test_no_secret_from_git_config_reaches_any_output(db_url, tmp_path_factory, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    root = tmp_path_factory.mktemp("repos")
    _plant(root)
    source = FilesystemSource([str(root)])

    items = list(source.scan())
    names = {getattr(i, "name", None) for i in items}
    assert {"one", "two", "three", "four", "bare.git", "hgproj"} <= names
    by_name = {i.name: i for i in items if hasattr(i, "name")}
    # what is stored is there, redacted
    one = by_name["one"]
    assert one.remote_url == "https://***@github.com/acme/one.git"
    assert one.remotes["scp"] == "***@git.example.com:acme/one.git"
    assert one.upstream == "https://***@github.com/acme/one.git/main"
    assert by_name["two"].upstream == "***@git.example.com:acme/two.git/main"
    assert by_name["two"].remotes["origin"] == "https://***@example.com/acme/two.git"
    assert by_name["three"].upstream == "origin/main" and by_name["three"].in_sync is True
    assert "invalid ref name" in by_name["four"].attributes["error"]
    assert by_name["hgproj"].remote_url == "https://***@example.com/acme/hg"
    assert not _leaks(repr(items))

    store = InventoryStore(db_url)
    try:
        run_id = new_run_id()
        summary, verified, finished = steps.run_through(
            store, run_id, [FilesystemSource([str(root)])]
        )
        assert verified.flush_succeeded and finished.status == "completed"
        store.safe_cleanup_old_projects(run_id)
        dump = _dump(store)
        assert "staged_projects" in dump and "projects" in dump  # the staging is searched too
        assert "***@github.com" in dump
        assert not _leaks(dump), _leaks(dump)
        assert not _leaks(repr((summary, verified, finished)))
    finally:
        store.dispose()

    captured = capsys.readouterr()
    assert not _leaks(caplog.text + captured.out + captured.err)
    if db_url.startswith("sqlite:///"):
        folder = Path(db_url[len("sqlite:///") :]).parent
        assert any(folder.iterdir())
        assert not _leaks(_files_text(folder))
