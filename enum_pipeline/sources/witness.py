"""The second witness: a direct look, after a run's read, at a project the read did not see.

A complete read that did not list a project is not proof that the project is gone: a listing
paged by offset can skip one, a symlinked folder can dangle, a share can be unmounted, a
repository can move into a class a filter leaves out. So the cleanup asks the source that owns
the project's scope to look at *that project* directly, independently of the read:

- a filesystem checkout: its own path (``filesystem_absence``);
- a code-host repository: the repository fetched by its stable id
  (``CodeHostSource.confirm_absence``).

The answer is a ``Confirmation``: ``gone`` (with the evidence: "path absent on device …", "not
found: GET …"), ``present`` (the project exists; fresh facts of it in ``updates``), or
``unknown`` (why it cannot tell). Only ``gone`` lets the store remove a row; a kind that cannot
confirm keeps everything (default deny).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from enum_pipeline.sources.fspaths import unescape_path

log = logging.getLogger(__name__)


class Absence(StrEnum):
    """A witness's answer about one project."""

    GONE = "gone"  # confirmed absent: the store may remove it
    PRESENT = "present"  # it exists: kept (and updated from the answer)
    UNKNOWN = "unknown"  # the witness cannot tell: kept, with the reason


@dataclass(frozen=True)
class Candidate:
    """A project a complete read did not see, due for removal, and how its scope was read."""

    project_key: str
    scope_key: str
    source_kind: str
    name: str
    location: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: the run's reading of the scope (``ScopeVerdict.identity`` / ``coverage``)
    identity: Mapping[str, Any] = field(default_factory=dict)
    coverage: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Confirmation:
    """What a witness saw of one candidate, when, and how (``evidence``: one sentence)."""

    project_key: str
    answer: Absence
    evidence: str
    checked_at: datetime
    #: ``present``: fresh facts of the project (``archived``, ``visibility``, ``name``, …)
    updates: Mapping[str, Any] = field(default_factory=dict)
    #: ``present``: why the read could not have listed it, when the witness knows
    outside: str | None = None


class Witness(Protocol):
    """Looks at candidates directly and answers for each (any it skips stays unconfirmed)."""

    def confirm(self, candidates: Sequence[Candidate]) -> Iterator[Confirmation]:
        """One ``Confirmation`` per candidate it could look at."""
        ...


def now() -> datetime:
    """The time a look is taken (UTC)."""
    return datetime.now(UTC)


def unknown(candidate: Candidate, why: str) -> Confirmation:
    """An ``unknown`` answer: the project is kept, with ``why``."""
    return Confirmation(candidate.project_key, Absence.UNKNOWN, why, now())


# -- filesystem -------------------------------------------------------------------------------


def _device_of(candidate: Candidate) -> int | None:
    """The device the checkout lived on: recorded when it was seen; for rows seen before that
    was recorded, the root's device when the walk stayed on one file system."""
    device = candidate.attributes.get("device")
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    root_dev = candidate.identity.get("st_dev")
    if candidate.coverage.get("one_file_system") and isinstance(root_dev, int):
        return root_dev
    return None


def _exists(path: str) -> str | None:
    """How ``path`` exists ("a folder", "a symlink", …), None when it provably does not, or
    OSError when it cannot be told."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    return "a folder" if stat.S_ISDIR(st.st_mode) else "a file"


def _nearest_ancestor(path: str) -> tuple[str, os.stat_result]:
    """The nearest existing ancestor of ``path`` and its status (a symlink followed); raises
    ``_Kept`` when one on the way cannot be examined or is a dangling symlink."""
    current = path
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            raise _Kept(f"no ancestor of {path} exists")
        current = parent
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _Kept(f"ancestor {current} cannot be examined: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(current)
            except OSError as exc:
                raise _Kept(
                    f"ancestor {current} is a dangling or unreadable symlink ({exc.strerror}): "
                    "a share or folder it points to may be gone for now"
                ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Kept(f"ancestor {current} is not a folder")
        if not os.access(current, os.X_OK):
            raise _Kept(f"ancestor {current} cannot be searched")
        return current, st


class _Kept(Exception):
    """Why a look cannot confirm absence (its message is the evidence)."""


def filesystem_absence(candidate: Candidate) -> Confirmation:
    """Look at a checkout's own path: ``gone`` only when it provably does not exist on the
    file system the project lived on.

    Kept (``unknown``) when an ancestor cannot be examined, is a dangling or unreadable symlink,
    or the nearest existing ancestor is on another device than the project was (a mount that
    went away); ``present`` when the path (or the real path the key names) still exists,
    whatever the walk said.
    """
    paths = [unescape_path(candidate.location)]
    if candidate.project_key.startswith("fs:"):
        real = unescape_path(candidate.project_key[3:])
        if real != paths[0]:
            paths.append(real)
    try:
        for path in paths:
            how = _exists(path)
            if how is not None:
                seen = now()
                return Confirmation(
                    candidate.project_key,
                    Absence.PRESENT,
                    f"{path} exists ({how}) at {seen:%Y-%m-%dT%H:%M:%SZ}: the walk did not "
                    "list it, so it is kept",
                    seen,
                )
        device = _device_of(candidate)
        if device is None:
            return unknown(
                candidate,
                f"{paths[0]} is absent, but the device the project lived on was not recorded "
                "(seen before devices were): a missing mount cannot be ruled out",
            )
        evidence = []
        for path in paths:
            ancestor, st = _nearest_ancestor(path)
            if st.st_dev != device:
                raise _Kept(
                    f"{path} is absent, but its nearest existing ancestor {ancestor} is on "
                    f"device {st.st_dev}, not {device} where the project lived: a mount that "
                    "went away?"
                )
            evidence.append(f"{path} absent on device {device} (nearest folder {ancestor})")
    except _Kept as kept:
        return unknown(candidate, str(kept))
    except OSError as exc:
        return unknown(candidate, f"{paths[0]} cannot be examined: {exc.strerror or exc}")
    checked = now()
    return Confirmation(
        candidate.project_key,
        Absence.GONE,
        f"path {'; '.join(evidence)} at {checked:%Y-%m-%dT%H:%M:%SZ}",
        checked,
    )


# -- the registry -----------------------------------------------------------------------------


class SourceWitness:
    """The witness of a configuration: each candidate goes to the source that owns its scope.

    A filesystem scope needs no configuration (its path is looked at); a code-host scope needs
    its configured source (host, owner, token). A scope no source owns, or a kind that offers no
    confirmation, keeps its candidates (default deny).
    """

    def __init__(
        self,
        sources: Iterable[Any] = (),
        *,
        config_error: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.by_scope: dict[str, Any] = {}
        for source in sources:
            for scope_key in source.scope_keys():
                self.by_scope.setdefault(scope_key, source)
        self.config_error = config_error  # why no source could be built, if none could
        self._warn = warn

    def confirm(self, candidates: Sequence[Candidate]) -> Iterator[Confirmation]:
        """One confirmation per candidate, scope by scope."""
        groups: dict[str, list[Candidate]] = {}
        for c in candidates:
            groups.setdefault(c.scope_key, []).append(c)
        for scope_key, group in groups.items():
            yield from self._confirm_scope(scope_key, group)

    def _confirm_scope(self, scope_key: str, group: list[Candidate]) -> Iterator[Confirmation]:
        kind = group[0].source_kind
        confirm = self._confirmer(scope_key, kind)
        if isinstance(confirm, str):
            yield from (unknown(c, confirm) for c in group)
            return
        answered: set[str] = set()
        try:
            for confirmation in confirm(group):
                answered.add(confirmation.project_key)
                yield confirmation
        except Exception as exc:  # noqa: BLE001 - a failed look keeps the rest, never removes
            log.warning("witness of %s failed: %s", scope_key, exc)
            why = f"the witness of {scope_key} failed: {type(exc).__name__}: {exc}"
            yield from (unknown(c, why) for c in group if c.project_key not in answered)

    def _confirmer(self, scope_key: str, kind: str):
        """The scope's ``confirm_absence``, or why there is none."""
        source = self.by_scope.get(scope_key)
        if source is None and kind == "filesystem":
            # a checkout's path needs no configuration to be looked at
            return lambda group: (filesystem_absence(c) for c in group)
        if source is None and self.config_error is not None:
            if self._warn is not None:  # once, and only when a code-host row needs a witness
                self._warn(f"no code-host witness for this cleanup (their rows are kept): "
                           f"{self.config_error}")  # fmt: skip
                self._warn = None
            return (
                f"no {kind} source can look the project up (the configuration cannot be read: "
                f"{self.config_error}), so its absence cannot be confirmed"
            )
        if source is None:
            return (
                f"scope {scope_key} is not configured now: no {kind} source can look the "
                "project up, so its absence cannot be confirmed"
            )
        confirm = getattr(source, "confirm_absence", None)
        if confirm is None or getattr(source, "kind", kind) != kind:
            return f"source kind {kind!r} offers no confirmation of absence: every row is kept"
        return confirm
