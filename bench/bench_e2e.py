"""End-to-end benchmark: ``enumerate_projects`` + ``cleanup_projects`` through Dagster (issue #6).

Each case runs in its own child process (peak RSS from ``os.wait4``) on a fresh Dagster instance
(``instance_for_test``: SQLite run/event storage in a temp ``DAGSTER_HOME``) and a fresh inventory
database, with ``execute_in_process`` and the jobs' in-process executor. Four Dagster runs per
case: enumerate #1, its cleanup (nothing to remove), enumerate #2 seeing 1% fewer projects, its
cleanup (removes them). Cases:

* ``tree`` — the real code location (``enum_pipeline.definitions:defs``, ``ENUM_PIPELINE_ROOTS``)
  on a real folder tree built by ``make_tree.py``; 1% of the repositories are deleted before
  run 2. A 100,000-repository tree takes minutes to build and ~17 GB, so trees stay small.
* ``synthetic`` — the same assets and jobs, with the resource overridden so the scan yields
  ``bench_store.make_record`` records (cheap, no disk), for sizes a tree cannot reach.

Every ``InventoryStore`` method and every ``Source.scan()`` step is timed inside the child;
**Dagster's share** of a run is its wall time minus those (so it also holds our thin asset code:
config loading, metadata, the preview table). Usage::

    python bench/bench_e2e.py                      # tree 1000, synthetic 1000 and 100000
    python bench/bench_e2e.py --quick              # tree 1000 + synthetic 1000 (CI)
    python bench/bench_e2e.py --synthetic 1000 100000 --tree 1000 --backends sqlite postgresql
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402

TARGET_DAGSTER_SECONDS = 2.0
RUNS = ("enumerate #1", "cleanup #1", "enumerate #2", "cleanup #2")


# ---------------------------------------------------------------------------- child


class Timers:
    """Time spent inside our store and scan calls (outermost call only, no double counting)."""

    def __init__(self) -> None:
        self.store = 0.0
        self.scan = 0.0
        self.calls = 0
        self._depth = 0

    def reset(self) -> tuple[float, float]:
        out = (self.store, self.scan)
        self.store = self.scan = 0.0
        return out

    def wrap_store(self, cls) -> None:
        """Time every public method of ``InventoryStore`` (and its constructor)."""
        for name, fn in list(vars(cls).items()):
            if callable(fn) and (not name.startswith("_") or name == "__init__"):
                setattr(cls, name, self._timed(fn))

    def _timed(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            self.calls += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.store += time.perf_counter() - t
                self._depth -= 1

        return timed

    def timed_scan(self, scan):
        """Wrap a ``scan()`` generator function: time each step of the iteration."""
        timers = self

        @functools.wraps(scan)
        def wrapper(source):
            it = scan(source)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    timers.scan += time.perf_counter() - t
                    return
                timers.scan += time.perf_counter() - t
                yield item

        return wrapper


SYNTH = {"size": 0, "run": 1, "scopes": 10}


class SyntheticSource:
    """``bench_store.make_record`` records; run 2 misses every 100th (as in bench_store)."""

    kind = "filesystem"

    def scope_keys(self) -> list[str]:
        from bench_store import scope_keys

        return scope_keys(SYNTH["scopes"])

    def scan(self):
        from bench_store import REMOVED_EVERY, make_record

        from enum_pipeline.sources.base import ScopeVerdict

        seen = dict.fromkeys(self.scope_keys(), 0)
        for i in range(SYNTH["size"]):
            if SYNTH["run"] == 2 and i % REMOVED_EVERY == 0:
                continue
            record = make_record(i, SYNTH["size"], SYNTH["scopes"], SYNTH["run"])
            seen[record.scope_key] += 1
            yield record
        for scope, count in seen.items():
            yield ScopeVerdict(scope, "filesystem", True, count)


def synthetic_defs(url: str):
    """The project's assets and jobs, with a resource whose sources are ``SyntheticSource``."""
    from dagster import Definitions

    from enum_pipeline.config import PipelineConfig
    from enum_pipeline.defs.assets import (
        projects,
        run_state,
        scanned_projects,
        stale_projects_cleanup,
    )
    from enum_pipeline.defs.jobs import cleanup_projects, enumerate_projects
    from enum_pipeline.defs.resources import InventoryResource

    class SyntheticConfig(PipelineConfig):
        def build_sources(self):
            return [SyntheticSource()]

    class SyntheticInventory(InventoryResource):
        def pipeline_config(self, config_path=None, roots=None):
            # The default cleanup policy and batch size; no configured sources to validate.
            return SyntheticConfig.model_construct(sources=[])

    return Definitions(
        assets=[scanned_projects, projects, run_state, stale_projects_cleanup],
        jobs=[enumerate_projects, cleanup_projects],
        resources={"inventory": SyntheticInventory(database_url=url)},
    )


def _delete_one_percent(url: str) -> int:
    """Remove every 100th repository of the tree from disk (by the inventory's paths)."""
    from enum_pipeline.store import InventoryStore

    store = InventoryStore(url)
    rows = sorted(
        (r["path"] for r in store.projects() if r["path"] and "/lib/sub" not in r["path"]),
    )
    store.dispose()
    victims = rows[::100]
    for path in victims:
        shutil.rmtree(path)
    return len(victims)


def child_main(spec: dict) -> int:
    """One case: four Dagster runs; print per-run wall/store/scan times as one JSON line."""
    url, workdir = spec["url"], spec["workdir"]
    tree_seconds = 0.0
    if spec["case"] == "tree":
        from make_tree import ensure_tree

        t = time.perf_counter()
        root = os.path.join(workdir, f"tree-{spec['size']}")
        manifest = ensure_tree(root, spec["size"])
        tree_seconds = time.perf_counter() - t
        os.environ["ENUM_PIPELINE_ROOTS"] = root
    os.environ["ENUM_PIPELINE_DATABASE_URL"] = url
    os.environ.pop("ENUM_PIPELINE_CONFIG", None)

    t0 = time.perf_counter()
    from dagster import instance_for_test

    from enum_pipeline.sources.filesystem import FilesystemSource
    from enum_pipeline.store import InventoryStore

    timers = Timers()
    timers.wrap_store(InventoryStore)
    FilesystemSource.scan = timers.timed_scan(FilesystemSource.scan)
    SyntheticSource.scan = timers.timed_scan(SyntheticSource.scan)
    if spec["case"] == "tree":
        from enum_pipeline.definitions import defs

        expected = int(manifest["expected_projects"])
    else:
        SYNTH.update(size=spec["size"], run=1)
        defs = synthetic_defs(url)
        expected = spec["size"]
    enumerate_job = defs.resolve_job_def("enumerate_projects")
    cleanup_job = defs.resolve_job_def("cleanup_projects")
    import_seconds = time.perf_counter() - t0

    runs = []
    dagster_home = os.path.join(workdir, "dagster_home")
    os.makedirs(dagster_home, exist_ok=True)
    os.environ["DAGSTER_HOME"] = dagster_home
    with instance_for_test(temp_dir=dagster_home) as instance:
        for run in (1, 2):
            if run == 2:
                if spec["case"] == "tree":
                    _delete_one_percent(url)
                else:
                    SYNTH["run"] = 2
            timers.reset()
            t = time.perf_counter()
            result = enumerate_job.execute_in_process(instance=instance)
            wall = time.perf_counter() - t
            store_s, scan_s = timers.reset()
            assert result.success
            flush = result.output_for_node("projects")
            if run == 1:
                assert flush["staged"] == expected, (flush["staged"], expected)
            runs.append(
                {"run": f"enumerate #{run}", "wall": wall, "store": store_s, "scan": scan_s}
            )
            run_config = {"ops": {"stale_projects_cleanup": {"config": {"run_id": result.run_id}}}}
            t = time.perf_counter()
            cleaned = cleanup_job.execute_in_process(instance=instance, run_config=run_config)
            wall = time.perf_counter() - t
            store_s, scan_s = timers.reset()
            assert cleaned.success
            out = cleaned.output_for_node("stale_projects_cleanup")
            assert out["status"] == ("noop" if run == 1 else "done"), out
            runs.append(
                {
                    "run": f"cleanup #{run}",
                    "wall": wall,
                    "store": store_s,
                    "scan": scan_s,
                    "removed": out["removed"],
                }
            )
    for r in runs:
        r["dagster"] = r["wall"] - r["store"] - r["scan"]
    print(
        json.dumps(
            {
                "runs": runs,
                "projects": expected,
                "import_seconds": import_seconds,
                "tree_seconds": tree_seconds,
                "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        ),
        flush=True,
    )
    return 0


# ---------------------------------------------------------------------------- parent


def run_child(spec: dict, timeout: float) -> dict:
    """One case of this script in a child process (see ``common.run_child``)."""
    return common.run_child(__file__, spec, timeout)


def table_rows(results: list[dict]) -> list[dict]:
    """Per case and Dagster run: wall (ours), store+scan (baseline), ratio, Dagster's share."""
    rows = []
    for res in results:
        for r in res["runs"]:
            inner = r["store"] + r["scan"]
            rows.append(
                {
                    "case": res["case"],
                    "size": res["size"],
                    "projects": res["projects"],
                    "backend": res["backend"],
                    "run": r["run"],
                    "wall": r["wall"],
                    "store": r["store"],
                    "scan": r["scan"],
                    "inner": inner,
                    "ratio": r["wall"] / inner if inner > 0 else None,
                    "dagster": r["dagster"],
                    "rss": res["maxrss_mib"],
                }
            )
    return rows


def target_check(results: list[dict]) -> list[str]:
    """Dagster's share of every 1,000-project enumerate (+ its cleanup) against the target."""
    lines = []
    for res in results:
        if res["size"] != 1000:
            continue
        by = {r["run"]: r for r in res["runs"]}
        for n in (1, 2):
            enum_s = by[f"enumerate #{n}"]["dagster"]
            both = enum_s + by[f"cleanup #{n}"]["dagster"]
            verdict = "met" if both < TARGET_DAGSTER_SECONDS else "MISSED"
            lines.append(
                f"{res['case']} {res['size']} {res['backend']} run {n}"
                f"{' (cold: first run in the process)' if n == 1 else ' (warm)'}: "
                f"Dagster share {enum_s:.2f}s enumerate + "
                f"{by[f'cleanup #{n}']['dagster']:.2f}s cleanup = {both:.2f}s "
                f"(target < {TARGET_DAGSTER_SECONDS:.0f}s: {verdict})"
            )
    return lines


def print_tables(results: list[dict]) -> None:
    print(
        f"{'case':<10} {'size':>7} {'backend':<10} {'run':<13} {'wall s':>8} {'store s':>8} "
        f"{'scan s':>7} {'ratio':>6} {'dagster s':>9} {'RSS':>6}"
    )
    for r in table_rows(results):
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"{r['case']:<10} {r['size']:>7} {r['backend']:<10} {r['run']:<13} {r['wall']:>8.3f} "
            f"{r['store']:>8.3f} {r['scan']:>7.3f} {ratio:>6} {r['dagster']:>9.3f} "
            f"{r['rss']:>5.0f}M"
        )
    for res in results:
        print(
            f"# {res['case']} {res['size']} {res['backend']}: imports + definitions "
            f"{res['import_seconds']:.2f}s before the first run"
        )
    for line in target_check(results):
        print(f"# {line}")


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=int, nargs="*", default=[1000], help="tree sizes (repos)")
    ap.add_argument("--synthetic", type=int, nargs="*", default=[1000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["sqlite"])
    ap.add_argument("--quick", action="store_true", help="1,000 projects only (CI)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))

    from bench_store import Databases, pg_admin_url

    trees, synthetic = sorted(args.tree), sorted(args.synthetic)
    if args.quick:
        trees, synthetic = trees[:1], synthetic[:1]
    workdir = tempfile.mkdtemp(prefix="enum-bench-e2e-")
    dbs = Databases(workdir)
    if "postgresql" in args.backends:
        why = dbs.pg_check()
        if why:
            print(f"PostgreSQL unreachable at {pg_admin_url()}: {why}", file=sys.stderr)
            return 1
    results = []
    started = time.perf_counter()
    try:
        cases = [("tree", n) for n in trees] + [("synthetic", n) for n in synthetic]
        for case, size in cases:
            for backend in args.backends:
                url = dbs.create(backend, "e2e")
                case_dir = tempfile.mkdtemp(prefix=f"{case}-{size}-", dir=workdir)
                try:
                    spec = {"case": case, "size": size, "url": url, "workdir": case_dir}
                    res = run_child(spec, args.timeout)
                finally:
                    dbs.drop(url)
                    shutil.rmtree(case_dir, ignore_errors=True)
                res.update(case=case, size=size, backend=backend)
                results.append(res)
                print(
                    f"# e2e {case} {size} {backend}: "
                    f"{sum(r['wall'] for r in res['runs']):.1f}s, {res['maxrss_mib']:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_tables(results)
    elapsed = time.perf_counter() - started
    print(f"# bench_e2e: {elapsed:.0f}s wall", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "e2e",
                    "args": vars(args),
                    "results": results,
                    "rows": table_rows(results),
                    "targets": target_check(results),
                    "seconds": elapsed,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
