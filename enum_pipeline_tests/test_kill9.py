"""The proof, part 2: ``kill -9`` real ``enum-pipeline run`` processes at random points.

A tree of real git repositories is enumerated once; then, again and again, the tree changes a
little (one repository deleted, one added), ``enum-pipeline run`` starts, and its whole process
group gets SIGKILL after a random delay spread over a normal run's duration, or aimed at the
scan, the flush (after it, or after its proof: between verify and complete) or the cleanup by
polling ``run_state`` / ``cleanups``. After every kill:

* no project is lost: everything present before is still there, unless the killed run's own
  cleanup removed it after the run completed, it is in the history with that run, and its
  repository really is gone from the tree (I1, I5, I6);
* at most one run is active (I4);
* the next ``enum-pipeline run`` is not blocked (the dead holder is abandoned), exits 0 (or 3),
  and leaves exactly the tree in the inventory, with no run left ``active`` and every run's
  status truthful (I2, I3).

Kill points: ``ENUM_PIPELINE_KILL_POINTS`` (total over both backends; default 56, split about
55/45 between SQLite and PostgreSQL). The summary line is printed with ``-s``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from enum_pipeline.store import InventoryStore
from enum_pipeline.store import schema as t
from enum_pipeline_tests.helpers import make_repo

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("enum-pipeline"))
TREE_SIZE = 40
TOTAL_KILLS = int(os.environ.get("ENUM_PIPELINE_KILL_POINTS", "56"))
KILLS = {"sqlite": (TOTAL_KILLS * 55 + 99) // 100}
KILLS["postgresql"] = max(TOTAL_KILLS - KILLS["sqlite"], 1)
AIMS = ("uniform", "uniform", "scan", "flush", "cleanup")
PHASES = ("startup", "scan", "flush", "cleanup", "exit")


class Probe:
    """Cheap reads of the newest run while a CLI process writes (no store engine: SQLite's
    ``BEGIN IMMEDIATE`` there would take the write lock for every poll)."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.conn = self.engine.connect()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def newest(self, after_generation: int) -> dict | None:
        rs, c = t.run_state, t.cleanups
        try:
            row = (
                self.conn.execute(
                    sa.select(
                        rs.c.run_id,
                        rs.c.generation,
                        rs.c.status,
                        rs.c.flushed_count,
                        rs.c.flush_succeeded,
                        sa.select(sa.func.count())
                        .where(c.c.run_id == rs.c.run_id)
                        .scalar_subquery()
                        .label("cleanups"),
                    )
                    .where(rs.c.generation > after_generation)
                    .order_by(rs.c.generation.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        finally:
            self.conn.rollback()
        return dict(row) if row else None


def phase_of(run: dict | None) -> str:
    """Which phase a run was in, from what it had durably committed when it died."""
    if run is None:
        return "startup"  # imports, Dagster start-up, before begin committed
    if run["status"] == "completed":
        return "exit" if run["cleanups"] else "cleanup"
    if run["flush_succeeded"] or run["flushed_count"]:
        return "flush"  # the flush committed; verify/complete had not finished
    return "scan"  # begun; staging, scope verdicts, or inside the flush transaction


def _reached(run: dict | None, trigger: str) -> bool:
    if run is None:
        return False
    if trigger == "verified":  # the proof committed: verify → complete is the next window
        return bool(run["flush_succeeded"]) or run["status"] == "completed"
    return PHASES.index(phase_of(run)) >= PHASES.index(trigger)


class Harness:
    """The tree, the CLI, and the checks."""

    def __init__(self, db_url: str, tmp_path: Path, seed: int):
        self.url = db_url
        self.tmp = tmp_path
        self.rng = random.Random(seed)
        self.tree = tmp_path / "tree"
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.env = {**os.environ, "DAGSTER_HOME": str(home), "ENUM_PIPELINE_DATABASE_URL": db_url}
        for name in ("ENUM_PIPELINE_CONFIG", "ENUM_PIPELINE_ROOTS"):
            self.env.pop(name, None)
        self.next_repo = 0
        self.removed_from_tree: set[str] = set()
        for _ in range(TREE_SIZE):
            self.add_repo()
        self.store: InventoryStore | None = None
        self.problems: list[str] = []
        self.untruthful: set[str] = set()  # runs already reported for I3

    # ------------------------------------------------------------------ the tree

    def add_repo(self) -> None:
        name = f"group{self.next_repo % 3}/repo{self.next_repo:04d}"
        self.next_repo += 1
        make_repo(self.tree / name)

    def delete_repo(self) -> None:
        repos = sorted(p.parent for p in self.tree.glob("*/*/.git"))
        victim = self.rng.choice(repos)
        shutil.rmtree(victim)
        self.removed_from_tree.add(self.key_of(victim))

    def key_of(self, path: Path) -> str:
        return "fs:" + os.path.realpath(path)

    def tree_keys(self) -> set[str]:
        return {self.key_of(p.parent) for p in self.tree.glob("*/*/.git")}

    # ------------------------------------------------------------------ the CLI

    def start(self) -> subprocess.Popen:
        log = open(self.tmp / "cli.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [CLI, "run", "--root", str(self.tree), "--no-reports"],  # reports: not under test
            cwd=self.tmp,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log = log
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
        code = proc.wait(timeout=timeout)
        proc.log.close()
        return code, (self.tmp / "cli.log").read_text()

    def run(self) -> tuple[int, str]:
        return self.finish(self.start())

    def kill(self, proc: subprocess.Popen) -> bool:
        """SIGKILL the whole process group; False when it had already exited."""
        alive = proc.poll() is None
        if alive:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it exited between the poll and the kill
                alive = False
        self.finish(proc)  # reap it, so its pid is gone for the dead-holder check
        return alive

    # ------------------------------------------------------------------ the checks

    def open_store(self) -> InventoryStore:
        if self.store is None:
            self.store = InventoryStore(self.url)
        return self.store

    def generation(self) -> int:
        runs = self.open_store().runs(limit=1)
        return runs[0].generation if runs else 0

    def check_after_kill(self, before: set[str], killed: dict | None, i: int) -> int:
        """No loss, single writer. Returns how many projects were lost (0)."""
        store = self.open_store()
        after = store.project_keys()
        lost = []
        for k in sorted(before - after):
            history = [h for h in store.history() if h.project_key == k]
            legit = (
                killed is not None
                and store.get_run(killed["run_id"]).status == "completed"
                and any(h.removed_by_run_id == killed["run_id"] for h in history)
                and k in self.removed_from_tree
                and k not in self.tree_keys()
            )
            if not legit:
                lost.append(k)
        if lost:
            self.problems.append(f"kill {i}: lost {lost} (killed run {killed})")
        active = [r.run_id for r in store.runs(limit=1000) if r.status == "active"]
        if len(active) > 1:
            self.problems.append(f"kill {i}: I4: {len(active)} active runs {active}")
        return len(lost)

    def check_recovered(self, code: int, output: str, i: int) -> None:
        """The next run completed and the inventory is exactly the tree."""
        store = self.open_store()
        keys, tree = store.project_keys(), self.tree_keys()
        if code not in (0, 3):
            self.problems.append(f"after kill {i}: the next run exited {code}:\n{output[-3000:]}")
            return
        if code == 0 and keys != tree:
            self.problems.append(
                f"after kill {i}: inventory differs from the tree: missing "
                f"{sorted(tree - keys)}, extra {sorted(keys - tree)}"
            )
        if code == 3 and (not tree <= keys or not keys - tree <= self.removed_from_tree):
            self.problems.append(f"after kill {i}: blocked cleanup left {sorted(keys ^ tree)}")
        for run in store.runs(limit=1000):
            if run.run_id in self.untruthful:
                continue
            if run.status not in ("completed", "failed"):
                self.untruthful.add(run.run_id)
                self.problems.append(f"after kill {i}: I3: run {run.run_id} is {run.status}")
            elif (run.status == "completed") != run.flush_succeeded:
                self.untruthful.add(run.run_id)
                self.problems.append(
                    f"after kill {i}: I3: run {run.run_id} is {run.status} with "
                    f"flush_succeeded={run.flush_succeeded} ({run.error})"
                )

    # ------------------------------------------------------------------ killing

    def calibrate(self) -> dict[str, float]:
        """One normal run, polled, to learn when its phases begin (seconds from the start)."""
        gen = self.generation()
        probe = Probe(self.url)
        marks: dict[str, float] = {}
        started = time.monotonic()
        proc = self.start()
        try:
            while proc.poll() is None:
                run = probe.newest(gen)
                now = time.monotonic() - started
                if run is not None:
                    marks.setdefault("scan", now)
                    if run["flushed_count"] or run["flush_succeeded"]:
                        marks.setdefault("flush", now)
                    if run["flush_succeeded"] or run["status"] == "completed":
                        marks.setdefault("verified", now)
                    if run["status"] == "completed":
                        marks.setdefault("cleanup", now)
                    if run["cleanups"]:
                        marks.setdefault("exit", now)
                time.sleep(0.002)
        finally:
            probe.close()
        marks["end"] = time.monotonic() - started
        code, output = self.finish(proc)
        assert code == 0, output
        fallbacks = (
            ("scan", 0.5),
            ("flush", 0.6),
            ("verified", 0.65),
            ("cleanup", 0.7),
            ("exit", 0.9),
        )
        for name, fallback in fallbacks:
            marks.setdefault(name, marks["end"] * fallback)
        return marks

    def kill_at_random_point(self, aim: str, marks: dict[str, float]) -> tuple[bool, dict | None]:
        """Start a run and SIGKILL it: after a random delay, or once it reaches ``aim``."""
        gen = self.generation()
        probe = Probe(self.url)
        proc = self.start()
        started = time.monotonic()
        try:
            if aim == "uniform":
                deadline = started + self.rng.uniform(0, marks["end"])
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:
                # wait until the run reaches the phase (polling what it committed), then kill
                # it after a random part of that phase's normal length
                if aim == "flush":  # after the flush, or after its proof (verify → complete)
                    aim = self.rng.choice(["flush", "verified"])
                trigger, start_mark, end_mark = {
                    "scan": ("scan", "scan", "flush"),
                    "flush": ("flush", "flush", "verified"),
                    "verified": ("verified", "verified", "cleanup"),
                    "cleanup": ("cleanup", "cleanup", "end"),
                }[aim]
                window = max(marks[end_mark] - marks[start_mark], 0.005)
                while proc.poll() is None:
                    run = probe.newest(gen)
                    if _reached(run, trigger):
                        time.sleep(self.rng.uniform(0, window))
                        break
                    if time.monotonic() - started > marks["end"] * 3 + 10:
                        break
                    time.sleep(0.002)
            killed = self.kill(proc)
            return killed, probe.newest(gen)
        finally:
            probe.close()


@pytest.mark.timeout(max(1800, TOTAL_KILLS * 40))
def test_kill9_at_random_points_never_loses_a_project(db_url, tmp_path):
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    target = KILLS[backend]
    seed = int(os.environ.get("ENUM_PIPELINE_KILL_SEED", str(random.randrange(10**6))))
    h = Harness(db_url, tmp_path, seed)
    started = time.monotonic()
    code, output = h.run()
    assert code == 0, output
    assert h.open_store().project_keys() == h.tree_keys(), "the first run must see the tree"
    marks = h.calibrate()
    phases: Counter = Counter()
    aims: Counter = Counter()
    lost = attempts = exits = 0
    recovered: Counter = Counter()
    try:
        while sum(phases[p] for p in PHASES) < target and attempts < target * 3:
            attempts += 1
            h.delete_repo()
            h.add_repo()
            before = h.open_store().project_keys()
            aim = h.rng.choice(AIMS)
            killed, run = h.kill_at_random_point(aim, marks)
            if not killed:
                exits += 1  # it finished before the kill point: no kill this time
            else:
                phases[phase_of(run)] += 1
                if run is not None and run["flush_succeeded"] and run["status"] == "active":
                    phases["after_proof"] += 1  # a "flush" kill between verify and complete
                aims[aim] += 1
                lost += h.check_after_kill(before, run, attempts)
            code, output = h.run()
            recovered[code] += 1
            h.check_recovered(code, output, attempts)
    finally:
        if h.store is not None:
            h.store.dispose()
        elapsed = time.monotonic() - started
        print(
            f"\nKILL9: backend={backend} kills={sum(phases[p] for p in PHASES)} "
            + " ".join(f"{p}={phases[p]}" for p in PHASES)
            + f" lost={lost} (flush kills after the proof: {phases['after_proof']}; "
            f"seed={seed}, aimed {dict(aims)}, finished before the kill: "
            f"{exits}, next run exit codes {dict(recovered)}, tree {TREE_SIZE} repositories, "
            f"normal run {marks['end']:.1f}s: begin {marks['scan']:.2f}s, flushed "
            f"{marks['flush']:.2f}s, verified {marks['verified']:.2f}s, completed "
            f"{marks['cleanup']:.2f}s, {elapsed:.0f}s in all)"
        )
    assert not h.problems, "\n".join(h.problems)
    assert sum(phases[p] for p in PHASES) >= target
    assert lost == 0
