"""One namespace over a module split into parts.

``gitmeta`` and ``filesystem`` re-export names from the modules they were split into. Reading a
name works as before; this keeps *setting* one working too: ``setattr`` on the entry module (as a
test's ``monkeypatch.setattr(gitmeta, "_packed_commit_time", ...)`` does, and its undo) also sets
it in every part that holds the same object, so the code that moved sees the new value, as it did
when it was one file. Lookups are untouched (no cost on the hot path).
"""

from __future__ import annotations

import sys
import types

_MISSING = object()


class _EntryModule(types.ModuleType):
    """A module whose attribute assignments reach its parts (``__split_parts__``)."""

    def __setattr__(self, name: str, value: object) -> None:
        old = self.__dict__.get(name, _MISSING)
        if old is not _MISSING:
            for part in self.__dict__.get("__split_parts__", ()):
                if part.__dict__.get(name, _MISSING) is old:
                    setattr(part, name, value)
        super().__setattr__(name, value)


def join_parts(module_name: str, *parts: types.ModuleType) -> None:
    """Make ``module_name`` (already imported) pass attribute assignments on to ``parts``."""
    module = sys.modules[module_name]
    module.__dict__["__split_parts__"] = parts
    module.__class__ = _EntryModule
