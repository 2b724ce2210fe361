"""Every source kind the package offers, found in one place.

A code host is one module of ``enum_pipeline.sources`` that declares ``CONFIG``: its
configuration model (``kind: Literal[...]``, and ``source``, the class it builds). The source
class carries its facts (``filled_columns``, ``coverage_rule``, ``repo_by_id_path``,
``confirm_absence``). Nothing else names the hosts: the configuration's union, the columns each
kind fills, the coverage rules and the CLI's help are all read from here. Only modules that
declare ``CONFIG`` are imported (a line ``CONFIG = ...`` is looked for in their text first).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

_DECLARES = re.compile(r"^CONFIG = ", re.MULTILINE)


@cache
def host_modules() -> tuple[ModuleType, ...]:
    """The modules of ``enum_pipeline.sources`` that declare a code host, by name."""
    folder = Path(__file__).resolve().parent
    found = []
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda i: i.name):
        path = folder / f"{info.name}.py"
        if path.is_file() and _DECLARES.search(path.read_text(encoding="utf-8")):
            found.append(importlib.import_module(f"{__package__}.{info.name}"))
    return tuple(found)


def host_config_models() -> tuple[type, ...]:
    """The configuration model of every code host."""
    return tuple(m.CONFIG for m in host_modules())


@cache
def source_classes() -> dict[str, type]:
    """``kind`` → source class, the filesystem's included."""
    from enum_pipeline.sources.filesystem import FilesystemSource

    classes: dict[str, Any] = {FilesystemSource.kind: FilesystemSource}
    for model in host_config_models():
        classes[model.source.kind] = model.source
    return classes


def kind_names() -> list[str]:
    """Every source kind, ``filesystem`` first."""
    return list(source_classes())


class _ByKind(Mapping[str, Any]):
    """``kind`` → one attribute of its source class."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, kind: str) -> Any:
        return getattr(source_classes()[kind], self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(source_classes())

    def __len__(self) -> int:
        return len(source_classes())


#: ``kind`` → the columns it fills (the rest stay NULL: never a guess).
FILLED_COLUMNS: Mapping[str, frozenset[str]] = _ByKind("filled_columns")
#: ``kind`` → its coverage rule (``sources.coverage``).
COVERAGE_RULES: Mapping[str, Callable[..., str | None]] = _ByKind("coverage_rule")


def filled_columns(source_kind: str) -> frozenset[str]:
    """The columns ``source_kind`` fills; empty for an unknown kind."""
    return FILLED_COLUMNS.get(source_kind, frozenset())


def outside_coverage(
    source_kind: str,
    coverage: Mapping[str, Any] | None,
    row: Mapping[str, Any],
    scope_locations: Collection[str],
) -> str | None:
    """Why a read with ``coverage`` could not have seen ``row``, or None when it could have.

    ``row`` is a projects row as a mapping (``location``, ``scope_key``, ``attributes``, and the
    ``archived`` / ``fork`` / ``visibility`` columns where they exist); ``scope_locations`` holds
    every location of the scope's rows (to tell a nested checkout when ``nested`` is False).
    An empty coverage (a reading recorded before coverage was) answers None. A kind without
    coverage rules could not have seen anything it did not list (default deny).
    """
    if not coverage:
        return None
    rule = COVERAGE_RULES.get(source_kind)
    if rule is None:
        return f"source kind {source_kind!r} has no coverage rules: what it did not list is kept"
    return rule(coverage, row, scope_locations)
