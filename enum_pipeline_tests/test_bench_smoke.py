"""Smoke test of the benchmarks: ``bench/run --quick`` runs them all and prints their tables.

No timing assertions (CI machines are shared and slow); only that every benchmark exits 0 and
prints its table. PostgreSQL is required: with ``CI=true`` an unreachable server is a failure
(the ``pg_database`` fixture), never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(request) -> subprocess.CompletedProcess:
    """One ``bench/run --quick`` for every test of this module."""
    request.getfixturevalue("pg_database")  # fails in CI, skips elsewhere, when PG is down
    env = {**os.environ, "PYTHON": sys.executable}
    for name in ("ENUM_PIPELINE_DATABASE_URL", "ENUM_PIPELINE_CONFIG", "ENUM_PIPELINE_ROOTS"):
        env.pop(name, None)
    return subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_bench_run_quick_exits_zero(quick_run):
    assert quick_run.returncode == 0, quick_run.stdout[-3000:] + quick_run.stderr[-3000:]
    assert "wrote " not in quick_run.stdout  # --quick writes no file unless asked


def test_scanner_table_printed(quick_run):
    assert "=== scanner:" in quick_run.stdout
    assert "find s" in quick_run.stdout and "ours s" in quick_run.stdout


def test_store_table_printed(quick_run):
    out = quick_run.stdout
    assert "=== store:" in out
    for backend in ("sqlite", "postgresql"):
        assert any(
            line.split()[1:3] == [backend, "total"]
            for line in out.splitlines()
            if line.strip() and line.split()[0].isdigit()
        ), f"no total row for {backend}"


def test_e2e_table_printed(quick_run):
    out = quick_run.stdout
    assert "=== e2e:" in out
    assert "enumerate #2" in out and "cleanup #2" in out
    assert "Dagster share" in out


def test_bench_run_keeps_the_sections_written_by_hand(tmp_path, monkeypatch):
    """bench/run rewrites BENCHMARKS.md from its own results; a section it does not measure
    (bench_queue.py, the CLI's own cost) carries the KEPT line and survives the rewrite."""
    from datetime import UTC, datetime

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import run_all

    old = tmp_path / "BENCHMARKS.md"
    old.write_text(
        "# Benchmarks\n\n## Scanner\nold scanner table\n\n"
        f"## Queue\n{run_all.KEPT}\nqueue figures\n\n## Targets\n- old\n"
    )
    kept = run_all.kept_sections(str(old))
    assert kept == [f"## Queue\n{run_all.KEPT}\nqueue figures"]
    load = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    text = run_all.render({}, "bench/run", {}, datetime.now(UTC), load, kept)
    assert "queue figures" in text and "old scanner table" not in text
    assert text.index("## Queue") < text.index("## Targets")
