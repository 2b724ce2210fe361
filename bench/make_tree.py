"""Build a synthetic folder tree of git repositories for bench_scanner.py.

A handful of real repositories are made with ``git`` (commits, ``git gc``) to serve as templates
for packed objects/refs; every other repository is synthesised by writing ``.git`` files directly
(HEAD, config, loose refs or packed-refs, loose zlib objects or a copy of a template pack,
description, info/exclude, logs, index), which is much faster than ``git init``. The mix:

* ~60% loose ref + loose objects, ~20% packed-refs + loose objects, ~15% packed refs + objects
  (real template packs), ~3% detached HEAD, ~1% unborn HEAD, ~1% with a submodule (``.git`` file
  into ``.git/modules/<name>``), a few bare repositories;
* work trees of ~20 files in 6 folders (marker file, ``src/pkg/sub``, ``tests/``, ``docs/``);
  ~10% with a ``node_modules`` of ~200 files in ~60 folders (skipped by the scanner, walked by
  ``find``), ~5% with a ``build/`` folder (walked by both); plus non-repository noise folders.

Usage: ``python bench/make_tree.py ROOT --repos 10000`` (the tree is rebuilt when ROOT exists).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import zlib

STAMP = ".enum_bench_tree.json"
VERSION = 2
_MARKERS = ["pyproject.toml", "package.json", "Cargo.toml", "go.mod", "pom.xml", "Makefile"]
_BASE_TIME = 1_700_000_000


def _write(path: str, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _loose(objects: str, kind: str, body: bytes) -> str:
    raw = f"{kind} {len(body)}\0".encode() + body
    sha = hashlib.sha1(raw).hexdigest()
    d = f"{objects}/{sha[:2]}"
    os.makedirs(d, exist_ok=True)
    _write(f"{d}/{sha[2:]}", zlib.compress(raw, 1))
    return sha


def _synth_commit(objects: str, n: int, rng: random.Random) -> tuple[str, int]:
    blob = _loose(objects, "blob", f"# project {n}\n".encode())
    tree = _loose(objects, "tree", b"100644 README.md\0" + bytes.fromhex(blob))
    when = _BASE_TIME + rng.randrange(10_000_000)
    body = (
        f"tree {tree}\nauthor Bench <bench@example.com> {when} +0000\n"
        f"committer Bench <bench@example.com> {when} +0100\n\ncommit {n}\n"
    ).encode()
    return _loose(objects, "commit", body), when


def _config(url: str | None, bare: bool = False) -> str:
    text = (
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
        f"\tbare = {'true' if bare else 'false'}\n\tlogallrefupdates = true\n"
    )
    if url:
        text += (
            f'[remote "origin"]\n\turl = {url}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
            '[branch "main"]\n\tremote = origin\n\tmerge = refs/heads/main\n'
        )
    return text


def _git(args: list[str], cwd: str, env: dict[str, str]) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_templates(workdir: str, count: int = 4) -> list[dict[str, object]]:
    """Real repositories (with ``git``), gc'd: their packs and packed-refs are copied around."""
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": workdir,
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    templates = []
    for t in range(count):
        repo = os.path.join(workdir, f"template{t}")
        _git(["-c", "init.defaultBranch=main", "init", "-q", "--template=", repo], workdir, env)
        for c in range(3 + t):
            _write(os.path.join(repo, f"f{c}.txt"), f"{t} {c}\n" * (c + 1))
            _git(["add", "."], repo, env)
            stamp = f"@{_BASE_TIME + t * 1000 + c} +0000"
            _git(["commit", "-q", "-m", f"c{c}"], repo, {**env, "GIT_COMMITTER_DATE": stamp})
        _git(["gc", "-q"], repo, env)
        gitdir = os.path.join(repo, ".git")
        packs = [
            os.path.join(gitdir, "objects", "pack", n)
            for n in os.listdir(os.path.join(gitdir, "objects", "pack"))
        ]
        templates.append(
            {
                "head": _git(["rev-parse", "HEAD"], repo, env),
                "when": int(_git(["log", "-1", "--format=%ct"], repo, env)),
                "packs": packs,
                "packed_refs": _read(os.path.join(gitdir, "packed-refs")),
                "index": _read(os.path.join(gitdir, "index")),
            }
        )
    return templates


def _git_dir(
    gitdir: str, n: int, rng: random.Random, templates: list[dict[str, object]], bare: bool
) -> dict[str, object]:
    """Write a plausible git dir; return what a scanner should report."""
    for d in ("refs/heads", "refs/tags", "objects/info", "objects/pack", "info", "hooks", "logs"):
        os.makedirs(f"{gitdir}/{d}", exist_ok=True)
    url = rng.choice(
        [
            f"https://git.example.com/grp{n // 100}/repo-{n}.git",
            f"git@git.example.com:grp{n // 100}/repo-{n}.git",
            None,
        ]
    )
    _write(f"{gitdir}/config", _config(url, bare))
    _write(f"{gitdir}/description", "Unnamed repository; edit this file to name it.\n")
    _write(f"{gitdir}/info/exclude", "# git ls-files --others --exclude-from=.git/info/exclude\n")
    r = rng.random()
    expect: dict[str, object] = {"unborn": False, "detached": False}
    if r < 0.01:  # unborn
        _write(f"{gitdir}/HEAD", "ref: refs/heads/main\n")
        expect["unborn"] = True
        return expect
    if r < 0.16:  # packed objects and refs, from a template
        t = templates[n % len(templates)]
        for p in t["packs"]:  # type: ignore[attr-defined]
            shutil.copyfile(p, f"{gitdir}/objects/pack/{os.path.basename(p)}")
        _write(f"{gitdir}/objects/info/packs", "")
        _write(f"{gitdir}/packed-refs", t["packed_refs"])  # type: ignore[arg-type]
        sha, when = str(t["head"]), int(t["when"])  # type: ignore[call-overload]
    else:
        sha, when = _synth_commit(f"{gitdir}/objects", n, rng)
        if r < 0.36:
            _write(
                f"{gitdir}/packed-refs",
                f"# pack-refs with: peeled fully-peeled sorted \n{sha} refs/heads/main\n",
            )
        else:
            _write(f"{gitdir}/refs/heads/main", sha + "\n")
    if rng.random() < 0.03:
        _write(f"{gitdir}/HEAD", sha + "\n")
        expect["detached"] = True
    else:
        _write(f"{gitdir}/HEAD", "ref: refs/heads/main\n")
    if not bare:
        _write(f"{gitdir}/index", templates[0]["index"])  # type: ignore[arg-type]
    _write(f"{gitdir}/logs/HEAD", f"{'0' * 40} {sha} Bench <b@example.com> {when} +0000\tinit\n")
    expect.update(head=sha, when=when)
    return expect


def _work_tree(repo: str, n: int, rng: random.Random) -> None:
    """A small project: ~20 files in 6 folders; 10% with a node_modules of ~200 files."""
    _write(f"{repo}/README.md", f"# repo {n}\n")
    _write(f"{repo}/LICENSE", "MIT\n")
    _write(f"{repo}/{_MARKERS[n % len(_MARKERS)]}", "\n")
    _write(f"{repo}/.gitignore", "build/\nnode_modules/\n")
    for d, files in (("src/pkg", 6), ("src/pkg/sub", 4), ("tests", 4), ("docs", 2)):
        os.makedirs(f"{repo}/{d}")
        for i in range(files):
            _write(f"{repo}/{d}/f{i}.txt", "x\n")
    if rng.random() < 0.10:
        os.makedirs(f"{repo}/node_modules/.bin")
        for p in range(20):
            base = f"{repo}/node_modules/pkg{p}"
            os.makedirs(f"{base}/lib/sub")
            for name in ("package.json", "README.md", "index.js"):
                _write(f"{base}/{name}", "{}\n")
            for i in range(5):
                _write(f"{base}/lib/f{i}.js", "x\n")
            for i in range(2):
                _write(f"{base}/lib/sub/g{i}.js", "x\n")
    if rng.random() < 0.05:
        os.makedirs(f"{repo}/build/obj")
        for i in range(10):
            _write(f"{repo}/build/obj/o{i}.o", "x")


def make_tree(root: str, repos: int, seed: int = 0) -> dict[str, object]:
    """(Re)build ``root`` with ``repos`` top-level repositories; return the manifest."""
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    rng = random.Random(seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="enum-bench-tpl-") as tmp:
        templates = make_templates(tmp)
        expected = 0
        for n in range(repos):
            group = f"{root}/grp{n // 100:04d}"
            if n % 100 == 0:
                os.mkdir(group)
                noise = f"{group}/archive/old/misc"
                os.makedirs(noise)
                for i in range(15):
                    _write(f"{noise}/note{i}.txt", "x\n")
            if n % 500 == 499:  # a bare repository
                _git_dir(f"{group}/mirror-{n}.git", n, rng, templates, bare=True)
                expected += 1
                continue
            repo = f"{group}/repo-{n:05d}"
            os.mkdir(repo)
            _work_tree(repo, n, rng)
            _git_dir(f"{repo}/.git", n, rng, templates, bare=False)
            expected += 1
            if rng.random() < 0.01:  # a submodule: .git file into .git/modules/<name>
                os.makedirs(f"{repo}/lib/sub")
                _write(f"{repo}/lib/sub/.git", "gitdir: ../../.git/modules/sub\n")
                _write(f"{repo}/lib/sub/README.md", "sub\n")
                _git_dir(f"{repo}/.git/modules/sub", n + 1_000_000, rng, templates, bare=False)
                expected += 1
    manifest = {
        "version": VERSION,
        "repos": repos,
        "seed": seed,
        "expected_projects": expected,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    with open(os.path.join(root, STAMP), "w") as f:
        json.dump(manifest, f)
    return manifest


def ensure_tree(root: str, repos: int, seed: int = 0) -> dict[str, object]:
    """Reuse ``root`` when its stamp matches ``repos``/``seed``, else build it."""
    try:
        with open(os.path.join(root, STAMP)) as f:
            manifest = json.load(f)
        if (manifest.get("version"), manifest.get("repos"), manifest.get("seed")) == (
            VERSION,
            repos,
            seed,
        ):
            return manifest
    except (OSError, ValueError):
        pass
    return make_tree(root, repos, seed)


def main() -> None:
    """Command line: build one tree."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--repos", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(make_tree(args.root, args.repos, args.seed)))


if __name__ == "__main__":
    main()
