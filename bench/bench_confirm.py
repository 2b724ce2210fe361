"""What confirming absences costs a cleanup (issue 19): the same cleanup with the sources'
witness looking at every candidate, against a witness that confirms without looking (the
cleanup as it was before absences were confirmed).

* **filesystem**: N project folders on disk (real folders, their device recorded); run 1 sees
  all, 1% of the folders are deleted, run 2 sees the rest; its cleanup removes the 1% — each
  one's path looked at (``lstat`` of the path, then of its nearest existing ancestor).
* **code host**: a loopback GitHub fake (the test suite's) with M repositories; run 1 lists
  them, 1% are deleted, run 2 lists the rest; its cleanup removes the 1% — each one fetched by
  id (``GET /repositories/{id}``: 404), after proving the principal still sees the owner.

Both variants run on fresh databases, alternating, ``--repeat`` times; the cleanup alone is
timed. Prints medians and the ratio witness / no look::

    python bench/bench_confirm.py                        # 100,000 folders, 10,000 repositories
    python bench/bench_confirm.py --quick                # 2,000 and 500, one repeat
    python bench/bench_confirm.py --backends sqlite postgresql --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from bench_store import CONFIRM_ALL, Databases  # noqa: E402

from enum_pipeline import steps  # noqa: E402
from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict  # noqa: E402
from enum_pipeline.sources.witness import SourceWitness  # noqa: E402
from enum_pipeline.store import CleanupPolicy, InventoryStore  # noqa: E402

POLICY = CleanupPolicy(max_delete_count=None, max_delete_fraction=None, confirm_budget=10**9)
EVERY = 100  # 1% removed


class _Folders:
    """Records of real folders under ``root`` (a filesystem scope), skipping ``gone``."""

    kind = "filesystem"

    def __init__(self, root: str, n: int, gone: set[int]) -> None:
        self.root, self.n, self.gone = root, n, gone
        self.dev = os.stat(root).st_dev
        self.scope = f"fs:{root}"

    def scope_keys(self):
        return [self.scope]

    def scan(self):
        for i in range(self.n):
            if i in self.gone:
                continue
            path = f"{self.root}/p{i:07d}"
            yield ProjectRecord(
                project_key=f"fs:{path}",
                scope_key=self.scope,
                source_kind="filesystem",
                name=f"p{i:07d}",
                location=path,
                path=path,
                vcs="git",
                attributes={"device": self.dev, "mount_point": "/"},
            )
        yield ScopeVerdict(
            self.scope,
            "filesystem",
            True,
            seen=self.n - len(self.gone),
            identity={"real_path": self.root, "st_dev": self.dev},
            coverage={"skip_names": [], "max_depth": None, "nested": True},
        )


def _timed_cleanup(store: InventoryStore, run_id: str, witness) -> tuple[float, int]:
    t = time.perf_counter()
    result = store.safe_cleanup_old_projects(run_id, witness=witness)
    return time.perf_counter() - t, result.removed


def filesystem_case(url: str, n: int, workdir: str, look: bool) -> tuple[float, int]:
    root = os.path.join(workdir, f"tree-{uuid.uuid4().hex[:6]}")
    os.makedirs(root)
    for i in range(n):
        os.mkdir(f"{root}/p{i:07d}")
    store = InventoryStore(url)
    try:
        steps.run_through(store, str(uuid.uuid4()), [_Folders(root, n, set())], policy=POLICY)
        gone = set(range(0, n, EVERY))
        for i in gone:
            os.rmdir(f"{root}/p{i:07d}")
        run_id = str(uuid.uuid4())
        steps.run_through(store, run_id, [_Folders(root, n, gone)], policy=POLICY)
        witness = SourceWitness([]) if look else CONFIRM_ALL
        seconds, removed = _timed_cleanup(store, run_id, witness)
        assert removed == len(gone), (removed, len(gone))
        return seconds, removed
    finally:
        store.dispose()
        shutil.rmtree(root, ignore_errors=True)


def codehost_case(url: str, m: int, look: bool) -> tuple[float, int]:
    from enum_pipeline.sources.github import GitHubSource
    from enum_pipeline_tests.fake_codehosts import FakeCodeHost, GitHubApp

    os.environ["ENUM_BENCH_TOKEN"] = "bench-token"
    app = GitHubApp(token="bench-token")
    repos = app.add_owner("Acme", m)
    store = InventoryStore(url)
    try:
        with FakeCodeHost(app) as served:

            def source():
                return GitHubSource("Acme", base_url=served.url, token_env="ENUM_BENCH_TOKEN")

            steps.run_through(store, str(uuid.uuid4()), [source()], policy=POLICY)
            gone = [r["id"] for r in repos[::EVERY]]
            for rid in gone:
                app.delete("Acme", rid)
            run_id = str(uuid.uuid4())
            steps.run_through(store, run_id, [source()], policy=POLICY)
            witness = SourceWitness([source()]) if look else CONFIRM_ALL
            seconds, removed = _timed_cleanup(store, run_id, witness)
        assert removed == len(gone), (removed, len(gone))
        return seconds, removed
    finally:
        store.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", type=int, default=100_000)
    ap.add_argument("--repositories", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["sqlite"])
    ap.add_argument("--quick", action="store_true", help="2,000 folders, 500 repos, 1 repeat")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.folders, args.repositories, args.repeat = 2000, 500, 1
    results = []
    with tempfile.TemporaryDirectory(prefix="enum-bench-confirm-") as workdir:
        dbs = Databases(workdir)
        if "postgresql" in args.backends and dbs.pg_check():
            print("PostgreSQL unreachable", file=sys.stderr)
            return 1
        for backend in args.backends:
            for case, size in (("filesystem", args.folders), ("codehost", args.repositories)):
                times: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(args.repeat):
                    for look in (False, True):
                        url = dbs.create(backend, "confirm")
                        try:
                            if case == "filesystem":
                                seconds, removed = filesystem_case(url, size, workdir, look)
                            else:
                                seconds, removed = codehost_case(url, size, look)
                        finally:
                            dbs.drop(url)
                        times[look].append(seconds)
                before = statistics.median(times[False])
                after = statistics.median(times[True])
                row = {
                    "backend": backend,
                    "case": case,
                    "size": size,
                    "removed": removed,
                    "no_look_s": before,
                    "witness_s": after,
                    "ratio": after / before,
                    "per_look_ms": (after - before) / removed * 1000,
                }
                results.append(row)
                print(
                    f"{backend:<10} {case:<10} {size:>7} projects, {removed:>5} removed: "
                    f"cleanup {before:.3f} s without looking, {after:.3f} s with the witness "
                    f"({row['ratio']:.2f}x; {row['per_look_ms']:.3f} ms a look)",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
