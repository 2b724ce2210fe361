"""Identity baselines: which readings of a scope are trusted, and accepting a changed identity.

A scope's identity (a root's device and real path; a code-host owner's id and the principal the
requests were authenticated as) is compared with the last *trusted* reading of it: a completed
run that read the scope completely and whose identity matched the baseline, or was accepted by an
operator. A changed identity holds the scope's cleanup back, run after run, until the old identity
returns or an operator accepts the new one (``accept_scope_identity``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enum_pipeline.store import schema as t
from enum_pipeline.store.errors import StoreError

#: The identity facts compared between readings, with what a change most likely means.
IDENTITY_KEYS = {
    "st_dev": "a different filesystem is mounted there?",
    "real_path": "the root now resolves to another folder?",
    "host": "another server answers for this scope?",
    "owner_id": "a different owner now holds that name?",
    "principal": "the requests are authenticated as someone else (a token missing or changed)?",
    "repository_selection": "the GitHub App installation now sees all, or selected, repositories?",
}


def identity_changes(before: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """What differs between two identities, one phrase a fact (facts either lacks are skipped)."""
    before, now = before or {}, now or {}
    return [
        f"{k} was {before[k]!r}, now {now[k]!r} ({hint})"
        for k, hint in IDENTITY_KEYS.items()
        if k in before and k in now and before[k] != now[k]
    ]


def _readings(conn: Connection, scope_key: str):
    """Every finished reading of ``scope_key``, oldest generation first."""
    s, rs = t.run_scopes, t.run_state
    return (
        conn.execute(
            sa.select(
                s.c.run_id,
                s.c.complete,
                s.c.identity,
                s.c.trusted,
                s.c.identity_accepted_by,
                rs.c.status,
                rs.c.generation,
            )
            .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
            .where(s.c.scope_key == scope_key)
            .order_by(rs.c.generation)
        )
        .mappings()
        .all()
    )


def baseline(conn: Connection, scope_key: str, before_generation: int):
    """The newest trusted reading of ``scope_key`` older than ``before_generation``, or None."""
    s, rs = t.run_scopes, t.run_state
    return (
        conn.execute(
            sa.select(s.c.run_id, s.c.identity, rs.c.generation)
            .select_from(s.join(rs, rs.c.run_id == s.c.run_id))
            .where(
                s.c.scope_key == scope_key,
                s.c.trusted.is_(True),
                rs.c.generation < before_generation,
            )
            .order_by(rs.c.generation.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )


def _judge(conn: Connection, scope, generation: int) -> tuple[bool, str | None]:
    """(trusted, why not) of one reading of a completed run."""
    if not scope["complete"]:
        return False, "scope read incompletely"
    base = baseline(conn, scope["scope_key"], generation)
    if base is None:
        return True, None
    changes = identity_changes(base["identity"], scope["identity"])
    if not changes:
        return True, None
    return False, (
        f"scope changed identity since run {base['run_id']}, its last trusted reading: "
        + "; ".join(changes)
        + f" — held until it returns or `enum-pipeline accept {scope['scope_key']}`"
    )


def settle_trust(conn: Connection, run_id: str, generation: int) -> None:
    """Judge every reading of run ``run_id`` (just completed) against its scope's baseline."""
    s = t.run_scopes
    scopes = conn.execute(sa.select(s).where(s.c.run_id == run_id)).mappings().all()
    for scope in scopes:
        if scope["identity_accepted_by"]:
            continue
        trusted, note = _judge(conn, scope, generation)
        conn.execute(
            sa.update(s)
            .where(s.c.run_id == run_id, s.c.scope_key == scope["scope_key"])
            .values(trusted=trusted, identity_note=note)
        )


def accept_scope_identity(
    conn: Connection, scope_key: str, run_id: str | None, accepted_by: str, now: datetime
) -> dict[str, Any]:
    """Make a completed, complete reading of ``scope_key`` its trusted baseline (``run_id``, or
    the newest such reading), recorded with who accepted it; later readings are judged again."""
    readings = [r for r in _readings(conn, scope_key) if r["status"] == "completed"]
    usable = [r for r in readings if r["complete"]]
    if not readings:
        raise StoreError(f"no completed run read scope {scope_key}; nothing to accept")
    if run_id is None:
        if not usable:
            raise StoreError(f"no completed run read scope {scope_key} completely")
        chosen = usable[-1]
    else:
        chosen = next((r for r in readings if r["run_id"] == run_id), None)
        if chosen is None or not chosen["complete"]:
            known = ", ".join(r["run_id"] for r in usable[-5:]) or "none"
            raise StoreError(
                f"run {run_id} has no completed, complete reading of scope {scope_key} "
                f"(newest that do: {known})"
            )
    s = t.run_scopes
    before = baseline(conn, scope_key, chosen["generation"])
    conn.execute(
        sa.update(s)
        .where(s.c.run_id == chosen["run_id"], s.c.scope_key == scope_key)
        .values(
            trusted=True,
            identity_accepted_by=accepted_by,
            identity_accepted_at=now,
            identity_note=f"identity accepted by {accepted_by}",
        )
    )
    for later in readings:
        if later["generation"] > chosen["generation"] and not later["identity_accepted_by"]:
            settle_trust_of(conn, later["run_id"], scope_key, later["generation"])
    return {
        "scope_key": scope_key,
        "run_id": chosen["run_id"],
        "identity": chosen["identity"] or {},
        "previous_identity": (before["identity"] or {}) if before is not None else None,
        "previous_run_id": before["run_id"] if before is not None else None,
        "accepted_by": accepted_by,
        "accepted_at": now,
    }


def settle_trust_of(conn: Connection, run_id: str, scope_key: str, generation: int) -> None:
    """Judge one reading again (after an acceptance moved the baseline before it)."""
    s = t.run_scopes
    scope = (
        conn.execute(sa.select(s).where(s.c.run_id == run_id, s.c.scope_key == scope_key))
        .mappings()
        .one()
    )
    trusted, note = _judge(conn, scope, generation)
    conn.execute(
        sa.update(s)
        .where(s.c.run_id == run_id, s.c.scope_key == scope_key)
        .values(trusted=trusted, identity_note=note)
    )
