"""Run the scanner, store and end-to-end benchmarks; print their tables; write BENCHMARKS.md.

Called by ``bench/run`` (see there). Every benchmark runs as a subprocess; the tables in the
Markdown file come from their ``--json`` output (the scanner's from its printed table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

#: Full-run arguments of each benchmark (``--quick`` replaces the sizes with the smallest).
FULL_ARGS = {
    "scanner": [],
    "store": [
        "--sizes",
        "10000",
        "100000",
        "1000000",
        "--repeat",
        "5",
        "--large-repeat",
        "1",
        "--growth-size",
        "100000",
        "--unchanged",
        "5",
        "--history-rows",
        "1000000",
        "--history-size",
        "100000",
    ],
    "e2e": [
        "--tree",
        "1000",
        "--synthetic",
        "1000",
        "100000",
        "--backends",
        "sqlite",
        "postgresql",
    ],
}
SCRIPTS = {"scanner": "bench_scanner.py", "store": "bench_store.py", "e2e": "bench_e2e.py"}
STORE_TARGET_RATIO = 1.5  # ours / the database-only limit (issue 13)
STORE_TARGET_RSS_MIB = 400
HISTORY_TARGET_RATIO = 1.5
UNCHANGED_TARGET_RATIO = 1.1  # an unchanged run / the first run (issue 13)
GROWTH_TARGET_RATIO = 1.5  # projects after five unchanged runs / after the first (issue 13)


def run_benchmark(name: str, quick: bool, json_path: str, extra: list[str]) -> dict:
    """Run one benchmark script; echo its output; return exit status, stdout, peak RSS."""
    cmd = [sys.executable, os.path.join(HERE, SCRIPTS[name])]
    cmd += ["--quick"] if quick else FULL_ARGS[name]
    if name != "scanner":
        cmd += ["--json", json_path]
    cmd += extra
    print(f"\n=== {name}: {shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    data = None
    if name != "scanner" and code == 0 and os.path.exists(json_path):
        with open(json_path) as f:
            data = json.load(f)
    return {
        "name": name,
        "cmd": cmd,
        "status": code,
        "stdout": "".join(lines),
        "maxrss_mib": usage.ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
        "data": data,
    }


def parse_scanner(stdout: str) -> list[dict]:
    """The rows of ``bench_scanner.py``'s table (size projects find ours ratio us/repo)."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0].isdigit():
            size, found, find_s, ours_s, ratio, per = parts
            rows.append(
                {
                    "size": int(size),
                    "projects": int(found),
                    "find": float(find_s),
                    "ours": float(ours_s),
                    "ratio": float(ratio),
                    "us_per_repo": float(per),
                }
            )
    return rows


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
        with open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import psycopg
        from bench_store import _libpq, pg_admin_url

        with psycopg.connect(_libpq(pg_admin_url()), connect_timeout=5) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
            info["pg_settings"] = ", ".join(
                f"{name}={value}"
                for name, value in conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                    "('shared_buffers', 'synchronous_commit', 'autovacuum', 'max_wal_size') "
                    "ORDER BY name"
                ).fetchall()
            )
    except Exception as err:  # noqa: BLE001 - informational only
        info["postgresql"] = f"unreachable ({type(err).__name__})"
    try:
        import dagster

        info["dagster"] = dagster.__version__
    except ImportError:
        pass
    return info


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def scanner_section(res: dict) -> list[str]:
    rows = parse_scanner(res["stdout"])
    out = [
        "## Scanner — `bench/bench_scanner.py` (filesystem scan vs `find ROOT -name .git -prune`)",
        "",
        "Median wall time of a full `FilesystemSource.scan()` of a synthetic tree built by "
        "`bench/make_tree.py`, against `find`. Peak RSS: the whole benchmark process (tree "
        "building included).",
        "",
        "| size (repos) | projects | backend | ours s (scan) | baseline s (find) | ratio | µs/repo "
        "| peak RSS |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['size']:,} | {r['projects']:,} | filesystem | {r['ours']:.4f} | "
            f"{r['find']:.4f} | {r['ratio']:.2f}× | {r['us_per_repo']:.1f} | "
            f"{res['maxrss_mib']:.0f} MiB |"
        )
    return out


def _paired(r: dict | None) -> str:
    if not r or r.get("median") is None:
        return "–"
    return f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f})"


def store_section(res: dict) -> list[str]:
    data = res["data"]
    args = data["args"]
    out = [
        "## Store cycle — `bench/bench_store.py` (InventoryStore, plain SQL, the database alone)",
        "",
        "One cycle = two runs on a fresh database: run 1 stages N records in batches of "
        f"{args['batch']} through `stage()` over {args['scopes']} scopes, flushes, verifies, "
        "completes, cleans up (nothing to remove) and prunes old staging; run 2 sees N − 1% (5% "
        "of the rest changed) and its cleanup (lenient policy) moves 1% to `removed_projects`. "
        "Phases are summed over both runs. Three implementations, each on its own fresh "
        "database with the same tables (the migrations), each case in its own child process:",
        "",
        "- *ours*: `InventoryStore`, records in, everything it does timed;",
        "- *plain*: the same data work by hand, Python included (the row tuples, the driver's "
        "adaptation): PostgreSQL COPY into the run's partition of `staged_projects`, one INSERT "
        "… SELECT … ON CONFLICT DO UPDATE that computes the digest and stamps and confirms, a "
        "count, INSERT INTO removed_projects SELECT … + DELETE, DROP of old staging; SQLite the "
        "same with `executemany`;",
        "- *limit*: plain's statements over rows prepared before the clock starts (JSON "
        "encoded, the COPY text rendered / the parameter tuples built, one batch at a time): "
        "what the database alone needs for this work.",
        "",
        "Ratios are medians over *n* repeats of the per-repeat ratio (the three run back to back "
        "in each repeat, the order rotating), with their range. Peak RSS is the child's "
        "`ru_maxrss` (Python only; the server's memory is not counted).",
        "",
        "| size | backend | phase | ours s | plain s | limit s | ours / limit | ours / plain | "
        "peak RSS ours | n |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        rss = f"{r['rss_ours']:.0f} MiB" if r["phase"] == "total" else ""
        phase = r["phase"]
        bold = "**" if r["phase"] in ("total", "flush+verify+cleanup") else ""
        out.append(
            f"| {r['size']:,} | {r['backend']} | {bold}{phase}{bold} | {_fmt(r['ours'])} | "
            f"{_fmt(r['plain'])} | {_fmt(r['limit'])} | {_paired(r['vs_limit'])} | "
            f"{_paired(r['vs_plain'])} | {rss} | {r['repeats']} |"
        )
    growth = [r for r in data["results"] if r["kind"] == "growth"]
    if growth:
        out += [
            "",
            "### Unchanged runs: time and table size",
            "",
            f"PostgreSQL, {growth[0]['size']:,} projects: a first run, then "
            f"{len(growth[0]['impls']['ours']['runs']) - 1} runs that see exactly the same "
            "records. The server runs with `autovacuum=off`: *vacuum none* is a table nobody "
            "vacuums between runs, *vacuum each* runs `VACUUM projects` after every run "
            "(untimed) — what autovacuum does when it keeps up. Size: `pg_table_size` (heap + "
            "TOAST) and `pg_indexes_size` of `projects` after each run. One sample per case.",
            "",
            "| impl | vacuum | run | s | heap MiB | indexes MiB | heap / after run 1 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for g in growth:
            for impl, d in g["impls"].items():
                first = d["sizes"][0]["heap"]
                for i, (sec, size) in enumerate(zip(d["runs"], d["sizes"], strict=True)):
                    out.append(
                        f"| {impl} | {g['vacuum']} | {i + 1} | {sec:.3f} | "
                        f"{size['heap'] / 2**20:.1f} | {size['index'] / 2**20:.1f} | "
                        f"{size['heap'] / first:.2f}× |"
                    )
    skipped = args.get("skip") or []
    if skipped:
        out += ["", f"Left out: {', '.join(skipped)} (see Notes)."]
    hist = [r for r in data["results"] if r["kind"] == "history"]
    if hist:
        out += [
            "",
            "### Cleanup as history grows",
            "",
            "Run 2's cleanup (ours) of the same cycle, with `removed_projects` empty vs "
            "pre-filled with old removals (medians of the same number of repeats).",
            "",
            "| size | backend | history rows | cleanup s (empty history) | cleanup s (with "
            "history) | ratio | peak RSS |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for h in hist:
            ratio = h["cleanup_with_history"] / h["cleanup_empty"] if h["cleanup_empty"] else None
            out.append(
                f"| {h['size']:,} | {h['backend']} | {h['history_rows']:,} | "
                f"{h['cleanup_empty']:.3f} | {h['cleanup_with_history']:.3f} | {_ratio(ratio)} | "
                f"{h['maxrss_mib']:.0f} MiB |"
            )
    return out


def e2e_section(res: dict) -> list[str]:
    data = res["data"]
    out = [
        "## End to end through Dagster — `bench/bench_e2e.py`",
        "",
        "`enumerate_projects` then `cleanup_projects` (`execute_in_process`, in-process "
        "executor, `instance_for_test` with SQLite storage in a temp `DAGSTER_HOME`), twice: "
        "run 2 sees 1% fewer projects and its cleanup removes them. *tree*: the real code "
        "location and `FilesystemSource` on a `make_tree.py` tree; *synthetic*: the same "
        "assets and jobs with the resource overridden to yield synthetic records (a "
        "100,000-repository tree would take minutes to build and ~17 GB). *Ours* = the Dagster "
        "run's wall time; *store+scan* = time inside `InventoryStore` methods and "
        "`Source.scan()` steps (timed in the process); *Dagster share* = the difference "
        "(Dagster plus our thin asset code). Run #1 is the first in its process (cold). One "
        "run per case.",
        "",
        "| case | size | backend | Dagster run | ours s (wall) | store+scan s | ratio | "
        "Dagster share s | peak RSS |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        out.append(
            f"| {r['case']} | {r['projects']:,} | {r['backend']} | {r['run']} | {r['wall']:.3f} "
            f"| {r['inner']:.3f} | {_ratio(r['ratio'])} | {r['dagster']:.3f} | {r['rss']:.0f} MiB |"
        )
    imports = ", ".join(
        f"{r['case']} {r['size']:,} {r['backend']}: {r['import_seconds']:.1f} s"
        for r in data["results"]
    )
    out += ["", f"Process start-up before the first run (imports + definitions): {imports}."]
    if data.get("cli"):
        out += ["", *cli_section(data["cli"]["summary"])]
    return out


def _mr(s: dict, unit: str = "") -> str:
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}–{s['max']:.2f})"


def cli_section(s: dict) -> list[str]:
    """The cold ``enum-pipeline run`` table of bench_e2e.py: wall, ratio, phases."""
    out = [
        "### `enum-pipeline run` cold, 1,000-repository tree (SQLite, embedded defaults)",
        "",
        f"Each a fresh process in a fresh folder (`./.dagster_home`, `./.enum_pipeline/`): "
        f"*first* a new home and inventory, *again* the unchanged tree (both instrumented), "
        f"*plain* the console script itself (*--reports*: with the reports made in the "
        f"process). Median (range) of {s['n']} samples, each "
        f"against `python -c 'import dagster'` measured alternately "
        f"({_mr(s['baseline'])} s).",
        "",
        "| mode | wall s | × import dagster | − import dagster s |",
        "|---|---:|---:|---:|",
    ]
    from bench_e2e import CLI_MODES

    for mode, label in CLI_MODES:
        if mode not in s:
            continue
        net = _mr(s[mode + "_net"]) if mode + "_net" in s else ""
        out.append(f"| {label} | {_mr(s[mode])} | {_mr(s[mode + '_ratio'], '×')} | {net} |")
    out += ["", "| phase | first s | again s |", "|---|---:|---:|"]
    for name, first in s["first_phases"].items():
        out.append(f"| {name} | {_mr(first)} | {_mr(s['again_phases'][name])} |")
    out.append(
        f"| (of the runs: scan + store) | {_mr(s['first_scan_store'])} | "
        f"{_mr(s['again_scan_store'])} |"
    )
    return out


def targets(results: dict[str, dict]) -> list[str]:
    """Each target of issues #6 and #13: met or missed, with the figure."""
    lines = []

    def verdict(ok: bool) -> str:
        return f"**{'met' if ok else 'missed'}**"

    scanner = results.get("scanner")
    if scanner:
        for r in parse_scanner(scanner["stdout"]):
            lines.append(
                f"- Scanner at or under 1.0× `find`, {r['size']:,} repositories: "
                f"{r['ratio']:.2f}× — {verdict(r['ratio'] <= 1.0)}"
            )
    store = results.get("store", {}).get("data")
    if store:
        for r in store["rows"]:
            if r["phase"] != "total" or r["size"] < 100_000:
                continue
            lim = r["vs_limit"]
            lines.append(
                f"- Store cycle within {STORE_TARGET_RATIO}× of the database-only limit, "
                f"{r['backend']} {r['size']:,}: {_paired(lim)} over {lim['n']} repeats — "
                f"{verdict(lim['median'] <= STORE_TARGET_RATIO)} (vs plain SQL: "
                f"{_paired(r['vs_plain'])})"
            )
        for g in (r for r in store["results"] if r["kind"] == "growth"):
            d = g["impls"]["ours"]
            first, rest = d["runs"][0], d["runs"][1:]
            ratio = statistics.median(rest) / first
            lines.append(
                f"- An unchanged run within {UNCHANGED_TARGET_RATIO}× of a first run "
                f"(PostgreSQL {g['size']:,}, vacuum {g['vacuum']}): median of {len(rest)} "
                f"unchanged runs {statistics.median(rest):.2f} s / first {first:.2f} s = "
                f"{ratio:.2f}× (range {min(rest) / first:.2f}–{max(rest) / first:.2f}×) — "
                f"{verdict(ratio <= UNCHANGED_TARGET_RATIO)}"
            )
            if g["vacuum"] == "none":
                grow = d["sizes"][-1]["heap"] / d["sizes"][0]["heap"]
                plain = g["impls"]["plain"]["sizes"]
                lines.append(
                    f"- `projects` after {len(rest)} unchanged runs, autovacuum off, at most "
                    f"{GROWTH_TARGET_RATIO}× its size after the first (PostgreSQL "
                    f"{g['size']:,}): {grow:.2f}× (plain SQL: "
                    f"{plain[-1]['heap'] / plain[0]['heap']:.2f}×) — "
                    f"{verdict(grow <= GROWTH_TARGET_RATIO)}"
                )
        for r in store["rows"]:
            if r["phase"] == "total" and r["size"] >= 1_000_000:
                ok = r["rss_ours"] < STORE_TARGET_RSS_MIB
                lines.append(
                    f"- Peak RSS of a {r['size']:,}-project store cycle ({r['backend']}) under "
                    f"{STORE_TARGET_RSS_MIB} MiB: {r['rss_ours']:.0f} MiB — "
                    f"**{'met' if ok else 'missed'}**"
                )
        for h in (r for r in store["results"] if r["kind"] == "history"):
            ratio = h["cleanup_with_history"] / h["cleanup_empty"]
            ok = ratio <= HISTORY_TARGET_RATIO
            lines.append(
                f"- Cleanup steady as history grows ({h['backend']}, {h['size']:,} projects, "
                f"{h['history_rows']:,} history rows): {h['cleanup_empty']:.3f} s → "
                f"{h['cleanup_with_history']:.3f} s ({ratio:.2f}×, target ≤ "
                f"{HISTORY_TARGET_RATIO}×) — **{'met' if ok else 'missed'}**"
            )
    e2e = results.get("e2e", {}).get("data")
    if e2e:
        for line in e2e["targets"]:
            missed = "MISSED" in line
            line = line.replace(": MISSED)", ")").replace(": met)", ")")
            lines.append(f"- {line} — {verdict(not missed)}")
    return lines


#: What the store does where it spends more than the limit; checked against the code of the
#: commit that regenerates BENCHMARKS.md (update with the code, never from memory).
STORE_NOTES = [
    "Where ours spends more than the limit (store code at this commit): `stage()` turns each "
    "record into one tuple (one function generated from the schema's staging columns, JSON "
    "encoded once, a repeated marker set encoded once; no digest), "
    "and stages the batch in one transaction of three statements: one UPDATE … RETURNING "
    "that locks the run's `run_state` row, checks it is active and adds the batch to its "
    "progress counts, the rows (PostgreSQL: psycopg's C COPY writer straight into the run's "
    "partition, no savepoint, the partition made sure of once a run; SQLite: executemany), "
    "the commit; the lease is checked without a round trip. The flush "
    "counts the staging, runs one upsert that computes the digest in SQL and stamps and "
    "confirms every row it writes (PostgreSQL: its RETURNING counted in the server for "
    "added/changed; SQLite: the statement's row count), and reads back the rows carrying the "
    "run's generation and confirmation before it commits (SQLite counts added/changed in that "
    "same scan). Verify is one "
    "read-only statement (staged rows, those present with generation and confirmation, rows "
    "stamped), compared with the run's own counts. Cleanup checks every scope (verdict, a "
    "newer completed run, identity), reads the stale rows and counts every scope's "
    "population for the deletion guard (one statement each, grouped by scope), marks "
    "missing rows and moves due ones to history in one statement (SQLite: two). Pruning "
    "counts a dropped partition's rows before dropping it.",
    "Plain and limit do the same data work in the fewest statements: COPY into the run's "
    "partition (PostgreSQL), one upsert that computes the digest and stamps and confirms, a "
    "count, INSERT … SELECT + "
    "DELETE for history, DROP of the old partition (SQLite: DELETE of old staging).",
]


def _cli_note(s: dict) -> str:
    """Where the cold CLI's time goes (the *again* phases): what is Dagster's, what is ours."""
    ph = {name: v["median"] for name, v in s["again_phases"].items()}
    runs = sum(
        ph.get(n, 0.0)
        for n in ("enumerate_projects", "cleanup_projects", "enumerate_and_clean_up",
                  "inventory_reports")
    )  # fmt: skip
    ours = s["again_scan_store"]["median"]
    fixed = ph["import dagster"] + ph["instance"] + ph["job build"]
    return (
        f"The cold `enum-pipeline run` (*again*): {fixed:.2f} s before any run (importing "
        f"Dagster, opening the instance, building the jobs), {runs:.2f} s in its three Dagster "
        f"runs, of which {ours:.2f} s is the scan and the store and the rest Dagster's run "
        "machinery and the report assets (pandas' import included). The instance reuses one "
        "connection per SQLite file and makes each run's event-log file with Dagster's "
        "migration scripts read once a process (`enum_pipeline/instance.py`); each run's "
        "events are still committed one by one."
    )


def notes(results: dict[str, dict]) -> list[str]:
    """How to read the figures, with the facts the run itself shows."""
    out = ["## Notes", ""]
    store = results.get("store", {}).get("data")
    if store:
        cycles = [r for r in store["results"] if r["kind"] == "cycle"]
        if cycles:
            big = max(cycles, key=lambda r: (r["size"], r["backend"] == "postgresql"))
            plain, limit = big["plain"], big["limit"]
            ours = big["ours"]
            out.append(
                f"- Python's share: at {big['size']:,} on {big['backend']}, ours stages in "
                f"{ours['median']['stage']:.2f} s, plain SQL in {plain['median']['stage']:.2f} s "
                f"and the database alone in {limit['median']['stage']:.2f} s (the same COPY over "
                "rows rendered beforehand); the digest is the database's work in all three."
            )
        skipped = store["args"].get("skip") or []
        if skipped:
            out.append(
                f"- Left out of this run (`--skip`): {', '.join(skipped)}; run them with "
                "`bench/run --only store --store-args '--sizes 1000000 --backends sqlite'`."
            )
        large = store["args"].get("large_repeat")
        if large == 1 and any(r["size"] >= 1_000_000 for r in cycles):
            out.append(
                "- 1,000,000-project cases ran once (`--large-repeat 1`): a single sample, "
                "not a median, and its ratio has no range."
            )
        out += [f"- {note}" for note in STORE_NOTES]
    cli = (results.get("e2e", {}).get("data") or {}).get("cli")
    if cli:
        out.append(f"- {_cli_note(cli['summary'])}")
    out += [
        "- The PostgreSQL server here runs with `autovacuum=off`, so nothing is vacuumed or "
        "analysed during a cycle: every row version a run replaces stays in the table as a dead "
        "tuple and later phases read through them (see *Unchanged runs* and "
        "docs/DEPLOYMENT.md).",
        "- *Dagster share* includes our thin asset code (config loading, metadata, the preview "
        "table); store and scan calls are excluded by timing them in the process.",
        "",
    ]
    return out


#: A hand-written section of BENCHMARKS.md (a benchmark bench/run does not run, e.g.
#: bench_queue.py) carries this line; bench/run keeps such sections when it writes the file.
KEPT = "<!-- kept by bench/run: written by hand from its own command -->"


def kept_sections(path: str | None) -> list[str]:
    """The sections of the file at ``path`` marked ``KEPT`` (heading to the next heading)."""
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    sections, current = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            if current is not None:
                sections.append(current)
            current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        sections.append(current)
    return ["\n".join(sec).rstrip() for sec in sections if KEPT in sec]


def render(
    results: dict[str, dict],
    command: str,
    info: dict,
    started: datetime,
    load,
    kept: list[str] = (),
) -> str:
    total = sum(r["seconds"] for r in results.values())
    out = [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `{command}` (total {total / 60:.1f} min).",
        "",
        f"- Machine: {info.get('cores')} cores ({info.get('cpu', '?')}), "
        f"{info.get('memory_gib', '?')} GiB RAM, {info.get('platform')}",
        f"- Python {info.get('python')}, SQLite {info.get('sqlite')}, PostgreSQL "
        f"{info.get('postgresql')} ({info.get('pg_settings', '')}), Dagster "
        f"{info.get('dagster', '?')}",
        "- **Shared machine** (other sessions may run beside the benchmark): every figure is a "
        "median (or single run where *n* = 1); load average "
        f"{load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end. Compare ratios (ours and "
        "baseline alternate within a repeat) rather than absolute seconds.",
        "",
    ]
    for name, section in (
        ("scanner", scanner_section),
        ("store", store_section),
        ("e2e", e2e_section),
    ):
        if name in results:
            out += section(results[name]) + [""]
    for section in kept:
        out += [section, ""]
    out += ["## Targets (issues #6, #13)", "", *targets(results), ""]
    out += notes(results)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smallest sizes, one repeat (CI)")
    ap.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    ap.add_argument(
        "--output", help="Markdown file to write (default: BENCHMARKS.md, not with --quick)"
    )
    ap.add_argument("--store-args", default="", help="extra arguments for bench_store.py")
    ap.add_argument("--e2e-args", default="", help="extra arguments for bench_e2e.py")
    args = ap.parse_args(argv)
    output = args.output or (None if args.quick else os.path.join(ROOT, "BENCHMARKS.md"))
    extra = {
        "scanner": [],
        "store": shlex.split(args.store_args),
        "e2e": shlex.split(args.e2e_args),
    }

    started = datetime.now(UTC)
    load_start = os.getloadavg()
    info = machine()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="enum-bench-run-") as tmp:
        for name in args.only:
            json_path = os.path.join(tmp, f"{name}.json")
            results[name] = run_benchmark(name, args.quick, json_path, extra[name])
    failed = [r["name"] for r in results.values() if r["status"] != 0]
    print()
    for r in results.values():
        print(
            f"# {r['name']}: exit {r['status']}, {r['seconds']:.0f}s, "
            f"peak {r['maxrss_mib']:.0f} MiB"
        )
    if failed:
        print(f"bench/run: failed: {', '.join(failed)}; nothing written", file=sys.stderr)
        return 1
    for line in targets(results):
        print(line)
    if output:
        command = "bench/run" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
        load = (load_start, os.getloadavg())
        text = render(results, command, info, started, load, kept_sections(output))
        with open(output, "w") as f:
            f.write(text)
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
