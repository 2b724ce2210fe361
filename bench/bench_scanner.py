"""Benchmark the filesystem scanner against ``find ROOT -name .git -prune`` (issue #5).

For each size, build (or reuse) a synthetic tree with ``make_tree.py``, run each contender once
to warm the cache, then ``--repeat`` times alternately, and print medians::

    python bench/bench_scanner.py --sizes 1000 10000 --repeat 5
    python bench/bench_scanner.py --quick          # smallest size, one repeat (CI)

``find`` runs as a subprocess (output to /dev/null); the scanner runs in this process (walk +
git metadata + record construction, consuming ``FilesystemSource.scan()``), so interpreter
start-up is not counted. Target: ratio <= 2.0. Exit status 1 when a tree's project count is
wrong, or with ``--check`` when the ratio exceeds ``--max-ratio``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from make_tree import ensure_tree  # noqa: E402

from enum_pipeline.sources.base import ProjectRecord, ScopeVerdict  # noqa: E402
from enum_pipeline.sources.filesystem import FilesystemSource  # noqa: E402


def time_find(root: str) -> float:
    """Wall time of ``find ROOT -name .git -prune``."""
    t = time.perf_counter()
    subprocess.run(["find", root, "-name", ".git", "-prune"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def time_scan(root: str) -> tuple[float, int, bool]:
    """Wall time of a full scan of ``root``; number of records; verdict completeness."""
    t = time.perf_counter()
    records = 0
    complete = False
    for item in FilesystemSource([root]).scan():
        if isinstance(item, ProjectRecord):
            records += 1
        elif isinstance(item, ScopeVerdict):
            complete = item.complete
    return time.perf_counter() - t, records, complete


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smallest size, one repeat")
    ap.add_argument("--workdir", default=os.path.join("/tmp", "enum_pipeline_bench"))
    ap.add_argument("--check", action="store_true", help="fail when ratio > --max-ratio")
    ap.add_argument("--max-ratio", type=float, default=2.0)
    args = ap.parse_args(argv)
    sizes = sorted(args.sizes)
    repeat = max(1, args.repeat)
    if args.quick:
        sizes, repeat = sizes[:1], 1

    status = 0
    rows = []
    for size in sizes:
        root = os.path.join(args.workdir, f"tree-{size}")
        manifest = ensure_tree(root, size)
        expected = int(manifest["expected_projects"])
        time_find(root)  # warm-up
        _, found, complete = time_scan(root)
        if found != expected or not complete:
            print(f"size {size}: found {found} projects, expected {expected}", file=sys.stderr)
            status = 1
        finds, scans = [], []
        for _ in range(repeat):
            finds.append(time_find(root))
            scans.append(time_scan(root)[0])
        f, s = statistics.median(finds), statistics.median(scans)
        rows.append((size, found, f, s, s / f, s / max(found, 1) * 1e6))

    print(f"{'size':>7} {'projects':>9} {'find s':>9} {'ours s':>9} {'ratio':>6} {'us/repo':>8}")
    for size, found, f, s, ratio, per in rows:
        print(f"{size:>7} {found:>9} {f:>9.4f} {s:>9.4f} {ratio:>6.2f} {per:>8.1f}")
        if args.check and ratio > args.max_ratio:
            status = 1
    if hasattr(os, "getloadavg"):
        print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return status


if __name__ == "__main__":
    sys.exit(main())
