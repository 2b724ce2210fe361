"""The pure model of the model-based test: what the inventory must hold, with no store.

``Model`` is a Python twin of the store's lifecycle (begin, stage, flush, verify, complete,
cleanup as plan → apply, restore, identity acceptance, staging pruning) over a small world of
projects in three scopes. ``machine.InventoryMachine`` drives the real store and this model side
by side and checks one against the other; nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from enum_pipeline.store import CleanupPolicy
from enum_pipeline_tests.helpers import key

SCOPES = ("fs:/m/s0", "fs:/m/s1", "fs:/m/s2")
#: Projects each scope may hold; ``locked/`` is the sub-folder a source may fail to read,
#: ``lockedness/`` its sibling that a protected prefix must not cover.
#: ``vendor/`` is the folder a narrowed configuration (``skip_names: [vendor]``) stops reading.
NAMES = ("p0", "p1", "p2", "p3", "p4", "locked/q0", "locked/q1", "lockedness/r0", "vendor/v0")

#: I1/I5 read "no newer run has seen it" as: no newer run has *staged* it either (its scan saw
#: the project even if its flush has not happened yet, or never will). False: only a newer
#: run's committed flush (``seen_generation``) counts, as the store implements it today.
STAGED_IS_SEEN = True


def under(location: str, prefix: str) -> bool:
    """Python twin of ``store.plan.under``."""
    return location == prefix or location[: len(prefix) + 1] == prefix.rstrip("/") + "/"


def root(scope: str) -> str:
    return scope.split(":", 1)[1]


def overlap(a: Collection[str] | None, b: Collection[str] | None) -> bool:
    """Two runs' scope sets share a scope (None is the whole inventory)."""
    if a is None and b is None:
        return True
    if a is None or b is None:
        return bool(b if a is None else a)
    return bool(set(a) & set(b))


@dataclass
class MRow:
    scope: str
    location: str
    seen_gen: int
    run_id: str
    confirmed_gen: int | None = None
    confirmed_run: str | None = None
    missed: int = 0
    first_gen: int = 0  # the generation whose flush inserted it


@dataclass
class MRun:
    run_id: str
    gen: int
    status: str = "active"
    attempt: str = ""
    flush_succeeded: bool = False
    flushed: bool = False
    staged: dict[str, MRow] = field(default_factory=dict)
    #: scope -> (complete, protected prefixes, st_dev, narrowed coverage)
    verdicts: dict[str, tuple[bool, tuple[str, ...], int, bool]] = field(default_factory=dict)
    policy: CleanupPolicy = field(default_factory=CleanupPolicy)
    trusted: dict[str, bool] = field(default_factory=dict)  # judged when it completes
    accepted: set[str] = field(default_factory=set)
    staging_kept: bool = True  # prune_staging has not dropped its staged rows
    session_gone: bool = False  # PostgreSQL: the holder's database session (its lease) ended
    scopes: tuple[str, ...] | None = None  # the scopes it claims (None: the whole inventory)


@dataclass
class MCleanup:
    status: str
    candidates: int
    planned: set[str] = field(default_factory=set)  # the removals its persisted plan lists
    approved: set[str] = field(default_factory=set)  # of those, the ones an operator approved


@dataclass
class MHist:
    key: str
    run_id: str
    row: MRow
    restored: bool = False


@dataclass
class CleanupPlan:
    refused: bool = False
    already_done: bool = False
    status: str = "noop"
    removed: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    candidates: int = 0
    due: list[str] = field(default_factory=list)  # what it removes, or would when held back


class Model:
    """What the inventory must hold: a pure-Python twin of the store's lifecycle."""

    def __init__(self) -> None:
        self.world: dict[str, set[str]] = {s: set() for s in SCOPES}
        self.device: dict[str, int] = dict.fromkeys(SCOPES, 1)  # st_dev of each root
        self.narrowed: dict[str, bool] = dict.fromkeys(SCOPES, False)  # skip_names: [vendor]
        self.rows: dict[str, MRow] = {}
        self.runs: dict[str, MRun] = {}
        self.order: list[str] = []  # run ids by generation
        self.last_gen = 0
        self.cleanups: dict[str, MCleanup] = {}
        self.history: list[MHist] = []
        self.max_flushed_gen: dict[str, int] = {}  # newest generation whose flush wrote the key
        self.max_staged_gen: dict[str, int] = {}  # newest generation whose scan staged the key

    @property
    def active(self) -> MRun | None:
        return next((r for r in self.runs.values() if r.status == "active"), None)

    @property
    def actives(self) -> list[MRun]:
        """The active runs, oldest first (several when their scope sets are disjoint)."""
        return sorted((r for r in self.runs.values() if r.status == "active"), key=lambda r: r.gen)

    def begin(
        self,
        run_id: str,
        attempt: str,
        policy: CleanupPolicy,
        scopes: tuple[str, ...] | None = None,
    ) -> MRun:
        for other in self.actives:  # abandoned runs over a scope of it are taken over
            if overlap(other.scopes, scopes):
                other.status = "failed"
        self.last_gen += 1
        run = MRun(run_id, self.last_gen, attempt=attempt, policy=policy, scopes=scopes)
        self.runs[run_id] = run
        self.order.append(run_id)
        return run

    def stage(self, run: MRun, names: list[tuple[str, str]]) -> None:
        for scope, name in names:
            k = key(name, scope)
            self.max_staged_gen[k] = max(self.max_staged_gen.get(k, 0), run.gen)
            run.staged.setdefault(k, MRow(scope, f"{root(scope)}/{name}", run.gen, run.run_id))

    def flush(self, run: MRun, lost: Collection[str] = ()) -> None:
        """The upsert; it confirms what it wrote in the same statement exactly when it wrote
        every staged row (none fenced by a newer generation, none lost by the database)."""
        run.flushed = True
        written = []
        for k, staged in run.staged.items():
            row = self.rows.get(k)
            if row is None:
                self.rows[k] = replace(
                    staged, seen_gen=run.gen, run_id=run.run_id, first_gen=run.gen
                )
                written.append(k)
            elif row.seen_gen <= run.gen:
                row.seen_gen, row.run_id, row.missed = run.gen, run.run_id, 0
                written.append(k)
            self.max_flushed_gen[k] = max(self.max_flushed_gen.get(k, 0), run.gen)
        for k in lost:  # the database dropped the inserted row
            self.rows.pop(k, None)
        if len(written) == len(run.staged) and not lost:
            for k in written:
                self.rows[k].confirmed_gen, self.rows[k].confirmed_run = run.gen, run.run_id

    def verify(self, run: MRun) -> None:
        run.flush_succeeded = True

    def complete(self, run: MRun) -> str:
        if run.status == "active":
            run.status = "completed" if run.flush_succeeded else "failed"
            if run.status == "completed":
                for scope in run.verdicts:
                    run.trusted[scope] = self._judge(run, scope)
        return run.status

    def _baseline(self, scope: str, gen: int) -> MRun | None:
        """The newest trusted reading of ``scope`` older than ``gen``."""
        trusted = [r for r in self.runs.values() if r.gen < gen and r.trusted.get(scope)]
        return max(trusted, key=lambda r: r.gen) if trusted else None

    def _judge(self, run: MRun, scope: str) -> bool:
        """A complete reading is trusted when its device matches the scope's baseline."""
        complete, _, dev, _ = run.verdicts[scope]
        base = self._baseline(scope, run.gen)
        return complete and (base is None or base.verdicts[scope][2] == dev)

    def readings(self, scope: str) -> list[MRun]:
        """Completed runs that read ``scope`` completely, oldest first."""
        return sorted(
            (
                r
                for r in self.runs.values()
                if r.status == "completed" and r.verdicts.get(scope, (False,))[0]
            ),
            key=lambda r: r.gen,
        )

    def accept(self, scope: str, run: MRun) -> None:
        """The operator accepts ``run``'s reading of ``scope``; later readings are re-judged."""
        run.trusted[scope] = True
        run.accepted.add(scope)
        for later in sorted(self.runs.values(), key=lambda r: r.gen):
            if later.gen > run.gen and scope in later.trusted and scope not in later.accepted:
                later.trusted[scope] = self._judge(later, scope)

    def fail(self, run: MRun) -> None:
        if run.status == "active":
            run.status = "failed"

    def plan_cleanup(self, run_id: str, dry_run: bool, witness: str = "world") -> CleanupPlan:
        """What ``safe_cleanup_old_projects`` must do, computed from the model alone, under the
        policy the run began with (whatever the request passes). ``witness``: how the sources'
        witness answers (``world``: gone iff the world no longer holds the project, present
        otherwise; any other mode confirms nothing)."""
        run = self.runs[run_id]
        policy = run.policy
        if run.status != "completed" or not run.flush_succeeded:
            return CleanupPlan(refused=True)
        record = self.cleanups.get(run_id)
        if record is not None and record.status in ("done", "noop") and not dry_run:
            return CleanupPlan(already_done=True, status=record.status)
        plan = CleanupPlan()
        blocked = False
        for scope, (complete, protected, _dev, narrowed) in run.verdicts.items():
            in_scope = [k for k, r in self.rows.items() if r.scope == scope]
            # stale: no run at or after this one wrote it, nor scanned it (staged, unflushed)
            stale = [
                k
                for k in in_scope
                if self.rows[k].seen_gen < run.gen
                and not (
                    STAGED_IS_SEEN
                    and any(
                        k in r.staged
                        for r in self.runs.values()
                        if r.gen > run.gen and r.staging_kept
                    )
                )
            ]
            if not complete or self._superseded(scope, run.gen) or not run.trusted.get(scope):
                continue
            candidates = [
                k
                for k in stale
                if not any(under(self.rows[k].location, p) for p in protected)
                and not (narrowed and f"{root(scope)}/vendor/" in self.rows[k].location + "/")
            ]
            due = [
                k
                for k in candidates
                if self.rows[k].missed + 1 >= policy.missing_runs_before_delete
            ]
            # a due row goes only when its witness confirms it gone; one it finds is kept as it
            # is, one it cannot tell about is kept marked missing
            found = [k for k in due if witness == "world" and self.exists(k)]
            due = [k for k in due if witness == "world" and not self.exists(k)]
            candidates = [k for k in candidates if k not in found]
            before = [k for k in in_scope if self.rows[k].first_gen < run.gen]
            blocked |= policy.guard(scope, len(due), len(before)) is not None
            plan.candidates += len(candidates)
            plan.removed += sorted(due)
            plan.marked += [k for k in candidates if k not in due]
        plan.due = sorted(plan.removed)
        approved = record.approved if record is not None else set()
        if blocked and set(plan.due) <= approved:
            blocked = False
        if blocked:
            plan.status = "blocked"
        elif plan.candidates == 0:
            plan.status = "noop"
        else:
            plan.status = "done"
        if plan.status != "done":
            plan.removed, plan.marked = [], []
        return plan

    def exists(self, key: str) -> bool:
        """The project is in the world now (what a direct look at it sees)."""
        row = self.rows[key]
        return row.location[len(root(row.scope)) + 1 :] in self.world[row.scope]

    def _superseded(self, scope: str, gen: int) -> bool:
        return any(
            r.gen > gen and r.status == "completed" and r.verdicts.get(scope, (False,))[0]
            for r in self.runs.values()
        ) or any(  # a newer scan whose staging was pruned: what it saw is unknown, unless it
            # completed over other scopes only (its keys carry its generation or a newer one)
            r.gen > gen
            and r.staged
            and not r.staging_kept
            and (r.status != "completed" or overlap(r.scopes, [scope]))
            for r in self.runs.values()
        )

    def may_resume(self, run: MRun) -> bool:
        """A failed run resumes while no run over a scope of it is active or began after it,
        and its staging is still there (not pruned, or it staged nothing)."""
        return (run.staging_kept or not run.staged) and not any(
            overlap(r.scopes, run.scopes)
            for r in self.runs.values()
            if r.status == "active" or r.gen > run.gen
        )

    def prune_staging(self, keep: int) -> None:
        by_gen = sorted(self.runs.values(), key=lambda r: -r.gen)
        newest = {r.run_id for r in by_gen[:keep]}
        newest |= {r.run_id for r in [r for r in by_gen if r.status == "completed"][:2]}
        for r in self.runs.values():
            if r.run_id not in newest and r.status != "active":
                r.staging_kept = False

    def apply_cleanup(self, run_id: str, plan: CleanupPlan) -> None:
        for k in plan.removed + plan.marked:
            self.rows[k].missed += 1
        for k in sorted(plan.removed):
            self.history.append(MHist(k, run_id, replace(self.rows.pop(k))))
        previous = self.cleanups.get(run_id)
        approved = previous.approved if previous is not None else set()
        planned = set(plan.due)
        self.cleanups[run_id] = MCleanup(plan.status, plan.candidates, planned, approved & planned)

    def restore(self, run_id: str) -> list[str]:
        restored = []
        entries = [h for h in self.history if h.run_id == run_id and not h.restored]
        present = set(self.rows)
        for h in entries:
            if h.key not in present:
                self.rows[h.key] = replace(h.row, missed=0)
                restored.append(h.key)
            h.restored = True
        return restored


# ------------------------------------------------------------------------- database snapshot
