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

**CLI** (issue #13): the cold cost of ``enum-pipeline run --root TREE`` on the 1,000-repository
tree, each run a fresh process with the embedded defaults (``./.dagster_home`` seeded with the
shipped ``dagster.yaml``, the SQLite inventory under ``./.enum_pipeline/``) in a fresh folder:
*first* (a new home and inventory), *again* (the same tree, unchanged) — both instrumented for
the breakdown (start-up, imports, instance, job build, the three Dagster runs, scan and store,
exit) — and *again, plain* (the console script itself, wall only). Median and range of
``--cli-runs`` samples, each against a baseline measured alternately in the same run: a fresh
``python -c 'import dagster'``.

Every ``InventoryStore`` method and every ``Source.scan()`` step is timed inside the child;
**Dagster's share** of a run is its wall time minus those (so it also holds our thin asset code:
config loading, metadata, the preview table). Usage::

    python bench/bench_e2e.py                      # tree 1000, synthetic 1000 and 100000
    python bench/bench_e2e.py --quick              # tree 1000 + synthetic 1000 (CI)
    python bench/bench_e2e.py --synthetic 1000 100000 --tree 1000 --backends sqlite postgresql
    python bench/bench_e2e.py --tree --synthetic --cli-runs 7   # the CLI only, 7 samples
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402

TARGET_DAGSTER_SECONDS = 2.0
TARGET_CLI_SECONDS = 1.5  # issue 13: `enum-pipeline run`, 1,000 repositories, cold
TARGET_CLI_NET_SECONDS = 1.0  # issue 21: the same, minus `python -c 'import dagster'`
PLAIN_MODES = ("first_plain", "again_plain", "again_reports_plain")
CLI_TREE = 1000
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
    from enum_pipeline.defs import defs as shared
    from enum_pipeline.defs.assets import stale_projects_cleanup
    from enum_pipeline.defs.enumeration import enumeration
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
        assets=[enumeration, stale_projects_cleanup],
        jobs=[enumerate_projects, cleanup_projects],
        resources={**shared.resources, "inventory": SyntheticInventory(database_url=url)},
        executor=shared.executor,
    )


def _one_range(instance, defs) -> dict[str, str]:
    """Every configured scope as a partition; the tags of one run over all of them."""
    from enum_pipeline.defs.constants import SCOPES_PARTITIONS
    from enum_pipeline.defs.scopes import partition_keys, run_partition_tags

    sources = defs.resources["inventory"].pipeline_config().build_sources()
    keys = partition_keys(k for s in sources for k in s.scope_keys())
    instance.add_dynamic_partitions(SCOPES_PARTITIONS, keys)
    return run_partition_tags(keys)


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
        tags = _one_range(instance, defs)
        for run in (1, 2):
            if run == 2:
                if spec["case"] == "tree":
                    _delete_one_percent(url)
                else:
                    SYNTH["run"] = 2
            timers.reset()
            t = time.perf_counter()
            result = enumerate_job.execute_in_process(instance=instance, tags=tags)
            wall = time.perf_counter() - t
            store_s, scan_s = timers.reset()
            assert result.success
            flush = result.output_for_node("enumeration.verify_flush", "verified")
            if run == 1:
                assert flush["staged"] == expected, (flush["staged"], expected)
            runs.append(
                {"run": f"enumerate #{run}", "wall": wall, "store": store_s, "scan": scan_s}
            )
            run_config = {"ops": {"stale_projects_cleanup": {"config": {"run_id": result.run_id}}}}
            t = time.perf_counter()
            cleaned = cleanup_job.execute_in_process(
                instance=instance, run_config=run_config, tags=tags
            )
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


# ---------------------------------------------------------------------------- CLI (cold)

CLI_PHASES = (
    "start-up",  # interpreter and site until this script runs
    "import dagster",
    "instance",
    "job build",
    "enumerate_projects",  # older CLIs, and --no-cleanup
    "cleanup_projects",  # older CLIs: the cleanup's own Dagster run
    "enumerate_and_clean_up",  # the enumeration and its cleanup in one Dagster run
    "inventory_reports",
    "other",  # argument parsing, config, the store's start-up and the lines printed
    "exit",  # after the command returned until the parent saw the process end
)


def cli_child_main(spec: dict) -> int:
    """``enum-pipeline run`` in this process, its phases timed; the marks go to spec["out"]."""
    marks = {"in_process": time.time()}
    import gc

    gc.disable()  # as the console script does (enum_pipeline.console)
    import enum_pipeline.cli as cli

    t = time.perf_counter()
    import dagster  # noqa: F401 - the command imports it anyway; timed on its own here

    marks["import dagster"] = time.perf_counter() - t
    from dagster import JobDefinition

    from enum_pipeline.sources.filesystem import FilesystemSource
    from enum_pipeline.store import InventoryStore

    timers = Timers()
    timers.wrap_store(InventoryStore)
    FilesystemSource.scan = timers.timed_scan(FilesystemSource.scan)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                marks[name] = marks.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    # The commands call home._instance and home._job through their module (older CLIs: one
    # module, cli.py; older still resolved the jobs from the whole code location).
    where = getattr(cli, "home", cli)
    where._instance = timed("instance", where._instance)
    if hasattr(where, "_job"):
        where._job = timed("job build", where._job)
    execute = JobDefinition.execute_in_process

    def execute_timed(job, *args, **kwargs):
        return timed(job.name, execute)(job, *args, **kwargs)

    JobDefinition.execute_in_process = execute_timed
    t = time.perf_counter()
    code = cli._main(spec["argv"])
    marks["command"] = time.perf_counter() - t
    marks["store"], marks["scan"] = timers.store, timers.scan
    marks["code"] = code
    marks["done"] = time.time()
    with open(spec["out"], "w") as f:
        json.dump(marks, f)
    cli._exit_now(code)
    return code  # not reached


def _cli_env() -> dict:
    env = dict(os.environ)
    for name in ("DAGSTER_HOME", "ENUM_PIPELINE_DATABASE_URL", "ENUM_PIPELINE_CONFIG",
                 "ENUM_PIPELINE_ROOTS"):  # fmt: skip
        env.pop(name, None)
    return env


def _timed_process(argv: list[str], cwd: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=_cli_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return wall


def _cli_instrumented(root: str, cwd: str) -> dict:
    """One instrumented cold ``enum-pipeline run``: wall time and its phases."""
    out = os.path.join(cwd, "marks.json")
    spec = {"argv": ["--log-level", "WARNING", "run", "--root", root], "out": out}
    started = time.time()
    argv = [sys.executable, os.path.abspath(__file__), "--cli-child", json.dumps(spec)]
    proc = subprocess.run(argv, cwd=cwd, env=_cli_env(), capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"enum-pipeline run exited {proc.returncode}: {proc.stderr[-3000:]}")
    with open(out) as f:
        marks = json.load(f)
    os.remove(out)
    phases = {name: marks.get(name, 0.0) for name in CLI_PHASES}
    phases["start-up"] = marks["in_process"] - started
    phases["exit"] = ended - marks["done"]
    inside = sum(marks.get(n, 0.0) for n in CLI_PHASES[2:8])
    phases["other"] = marks["command"] - inside
    return {"wall": ended - started, "phases": phases, "store": marks["store"],
            "scan": marks["scan"]}  # fmt: skip


def cli_bench(workdir: str, samples: int, root: str | None = None) -> dict:
    """Cold ``enum-pipeline run`` on the 1,000-repository tree, alternating with the baseline."""
    from make_tree import ensure_tree

    root = os.path.abspath(root or os.path.join(workdir, f"tree-{CLI_TREE}"))
    ensure_tree(root, CLI_TREE)
    console = str(__import__("pathlib").Path(sys.executable).with_name("enum-pipeline"))
    plain = [console, "--log-level", "WARNING", "run", "--root", root]
    rows = []
    for i in range(samples):
        sample = os.path.join(workdir, f"cli-{i}")
        os.makedirs(sample)
        fresh = os.path.join(workdir, f"cli-{i}-plain")
        os.makedirs(fresh)
        baseline = _timed_process([sys.executable, "-c", "import dagster"], sample)
        first = _cli_instrumented(root, sample)
        again = _cli_instrumented(root, sample)
        again_plain = _timed_process(plain, sample)
        again_reports = _timed_process([*plain, "--reports"], sample)
        first_plain = _timed_process(plain, fresh)
        rows.append({"baseline": baseline, "first": first, "again": again,
                     "again_plain": again_plain, "again_reports_plain": again_reports,
                     "first_plain": first_plain})  # fmt: skip
        shutil.rmtree(sample, ignore_errors=True)
        shutil.rmtree(fresh, ignore_errors=True)
        print(
            f"# cli sample {i + 1}/{samples}: first {first['wall']:.2f}s, again "
            f"{again['wall']:.2f}s, plain {first_plain:.2f}s / {again_plain:.2f}s, "
            f"--reports {again_reports:.2f}s, import dagster {baseline:.2f}s",
            file=sys.stderr,
            flush=True,
        )
    return {"samples": rows, "summary": cli_summary(rows)}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cli_summary(rows: list[dict]) -> dict:
    """Medians and ranges: wall per mode, its ratio to the baseline, and each phase."""
    out = {"baseline": _stats([r["baseline"] for r in rows]), "n": len(rows)}
    for mode in ("first", "again", *PLAIN_MODES):
        walls = [r[mode] if mode in PLAIN_MODES else r[mode]["wall"] for r in rows]
        out[mode] = _stats(walls)
        out[f"{mode}_ratio"] = _stats([w / r["baseline"] for w, r in zip(walls, rows, strict=True)])
        out[f"{mode}_net"] = _stats([w - r["baseline"] for w, r in zip(walls, rows, strict=True)])
    for mode in ("first", "again"):
        out[f"{mode}_phases"] = {
            name: _stats([r[mode]["phases"][name] for r in rows]) for name in CLI_PHASES
        }
        out[f"{mode}_scan_store"] = _stats([r[mode]["scan"] + r[mode]["store"] for r in rows])
    return out


def _rng(s: dict, unit: str = "s") -> str:
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}–{s['max']:.2f})"


def cli_lines(cli: dict) -> list[str]:
    """The CLI table: medians (range) of the wall, the ratio to the baseline, the phases."""
    s = cli["summary"]
    lines = [
        f"cli: enum-pipeline run --root TREE ({CLI_TREE} repositories), cold, median (range) of "
        f"{s['n']}; baseline python -c 'import dagster' {_rng(s['baseline'])}",
        f"{'mode':<22} {'wall s':>20} {'× import dagster':>20} {'− import dagster':>20}",
    ]
    for mode, label in CLI_MODES:
        lines.append(
            f"{label:<22} {_rng(s[mode]):>20} {_rng(s[mode + '_ratio'], '×'):>20} "
            f"{_rng(s[mode + '_net']):>20}"
        )
    lines.append(f"{'phase':<20} {'first s':>20} {'again s':>20}")
    for name in CLI_PHASES:
        lines.append(
            f"{name:<20} {_rng(s['first_phases'][name]):>20} {_rng(s['again_phases'][name]):>20}"
        )
    lines.append(
        f"{'(scan+store)':<20} {_rng(s['first_scan_store']):>20} {_rng(s['again_scan_store']):>20}"
    )
    return lines


CLI_MODES = (
    ("first", "first"),
    ("again", "again"),
    ("first_plain", "first, plain"),
    ("again_plain", "again, plain"),
    ("again_reports_plain", "again, plain, --reports"),
)


def cli_target(cli: dict) -> list[str]:
    s = cli["summary"]
    lines = []
    for mode, label in (("again_plain", "again (console script)"), ("first_plain", "first")):
        verdict = "met" if s[mode + "_net"]["median"] < TARGET_CLI_NET_SECONDS else "MISSED"
        lines.append(
            f"cli {CLI_TREE} sqlite {label}: enum-pipeline run {_rng(s[mode])} cold, "
            f"{_rng(s[mode + '_net'])} beyond python -c 'import dagster' "
            f"(target < {TARGET_CLI_NET_SECONDS}s: {verdict})"
        )
    s_rep = s["again_reports_plain_net"]
    lines.append(
        f"cli {CLI_TREE} sqlite again with --reports (reports made in the process): "
        f"{_rng(s_rep)} beyond python -c 'import dagster' (informational)"
    )
    return lines


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
    ap.add_argument(
        "--cli-runs", type=int, default=5, help="cold CLI samples (0: none; --quick: at most 1)"
    )
    ap.add_argument("--cli-tree", help="the CLI's 1,000-repository tree (made here if absent)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cli-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    if args.cli_child:
        return cli_child_main(json.loads(args.cli_child))

    from bench_store import Databases, pg_admin_url

    trees, synthetic = sorted(args.tree), sorted(args.synthetic)
    cli_runs = args.cli_runs
    if args.quick:
        trees, synthetic = trees[:1], synthetic[:1]
        cli_runs = min(cli_runs, 1)  # a smoke test of the mode; medians need the full run
    workdir = tempfile.mkdtemp(prefix="enum-bench-e2e-")
    dbs = Databases(workdir)
    if "postgresql" in args.backends:
        why = dbs.pg_check()
        if why:
            print(f"PostgreSQL unreachable at {pg_admin_url()}: {why}", file=sys.stderr)
            return 1
    results = []
    cli = None
    started = time.perf_counter()
    try:
        if cli_runs > 0:
            cli = cli_bench(workdir, cli_runs, args.cli_tree)
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
    if results:
        print_tables(results)
    if cli:
        for line in cli_lines(cli):
            print(line)
        for line in cli_target(cli):
            print(f"# {line}")
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
                    "targets": target_check(results) + (cli_target(cli) if cli else []),
                    "cli": cli,
                    "seconds": elapsed,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
