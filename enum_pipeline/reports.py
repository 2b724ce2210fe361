"""The inventory as pandas frames, and the reports built on them (no Dagster here).

pandas is imported inside each function, never at module import, so neither the scan/flush path
nor the CLI's start-up pays for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from enum_pipeline.sources.kinds import filled_columns
from enum_pipeline.store import OUTPUT_COLUMNS, output_row

if TYPE_CHECKING:
    import pandas as pd

_BOOL = ("archived", "fork", "in_sync", "shallow", "has_stash")
_INT = ("stars",)
_TIME = (
    "created_at",
    "last_activity_at",
    "last_fetch_at",
    "last_commit_at",
    "first_seen_at",
    "last_seen_at",
    "missing_since",
)
_LIST = ("topics", "markers")
_JSON = ("remotes",)

#: Activity age buckets: (label, upper bound in days, exclusive); the last one is open-ended.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 7 days", 7),
    ("7-30 days", 30),
    ("30-90 days", 90),
    ("90-365 days", 365),
    (">= 1 year", float("inf")),
)


def column_schema() -> dict[str, str]:
    """Column name → pandas dtype of ``inventory_frame``."""
    out: dict[str, str] = {}
    for c in OUTPUT_COLUMNS:
        if c in _BOOL:
            out[c] = "boolean"
        elif c in _INT:
            out[c] = "Int64"
        elif c in _TIME:
            out[c] = "datetime64[ns, UTC]"
        elif c in _LIST:
            out[c] = "object (list of str)"
        else:
            out[c] = "string" if c not in _JSON else "string (JSON)"
    return out


def inventory_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The inventory as a DataFrame: ``OUTPUT_COLUMNS``, nullable dtypes (NULL: not known)."""
    import pandas as pd

    data = [output_row(r) for r in rows]
    df = pd.DataFrame(data, columns=list(OUTPUT_COLUMNS))
    for c in OUTPUT_COLUMNS:
        if c in _BOOL:
            df[c] = df[c].astype("boolean")
        elif c in _INT:
            df[c] = df[c].astype("Int64")
        elif c in _TIME:
            df[c] = pd.to_datetime(df[c], utc=True)
        elif c in _LIST:
            df[c] = df[c].map(lambda v: list(v) if v is not None else None)
        elif c in _JSON:
            df[c] = df[c].map(lambda v: json.dumps(v, sort_keys=True) if v is not None else None)
            df[c] = df[c].astype("string")
        else:
            df[c] = df[c].astype("string")
    return df


#: The label of a value the project's source does not provide (``FILLED_COLUMNS``), as opposed
#: to ``(unknown)``: a source that provides the column sent nothing for this project.
NOT_FILLED = "(n/a)"


def _counts(series: pd.Series, kinds: pd.Series | None = None) -> dict[str, int]:
    values = series.astype("object").where(series.notna(), "(unknown)")
    if kinds is not None:
        fills = kinds.map(lambda k: series.name in filled_columns(str(k)))
        values = values.where(series.notna() | fills, NOT_FILLED)
    counts = values.value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def activity_age(df: pd.DataFrame, now: datetime | None = None) -> dict[str, int]:
    """How many projects last had activity in each ``AGE_BUCKETS`` bucket (and unknown)."""
    import pandas as pd

    now_ts = pd.Timestamp(now or datetime.now(UTC))
    days = (now_ts - df["last_activity_at"]).dt.total_seconds() / 86400
    out = {label: 0 for label, _ in AGE_BUCKETS}
    for d in days:
        if pd.isna(d):
            continue
        for label, bound in AGE_BUCKETS:
            if d < bound:
                out[label] += 1
                break
    out["(unknown)"] = int(days.isna().sum())
    return out


def summary(df: pd.DataFrame, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Counts by source, scope, VCS, visibility, language, ecosystem marker and activity age.

    A visibility or language the project's source does not provide counts as ``(n/a)``; one it
    provides but left empty as ``(unknown)``.
    """
    markers: dict[str, int] = {}
    for ms in df["markers"]:
        for m in ms or ():
            markers[m] = markers.get(m, 0) + 1
    return {
        "source_kind": _counts(df["source_kind"]),
        "scope_key": _counts(df["scope_key"]),
        "vcs": _counts(df["vcs"]),
        "visibility": _counts(df["visibility"], df["source_kind"]),
        "language": _counts(df["language"], df["source_kind"]),
        "marker": dict(sorted(markers.items(), key=lambda kv: (-kv[1], kv[0]))),
        "activity_age": activity_age(df, now),
    }


def _org(remote: str) -> str:
    return remote.rsplit("/", 1)[0] if "/" in remote else remote


def clone_coverage(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What only this inventory can tell, joined on ``normalized_remote`` (case-insensitive):

    ``not_cloned``: hosted repositories no checkout points at; ``outside_orgs``: checkouts whose
    remote lies in no inventoried organisation or group; ``cloned_twice``: hosted (or any)
    remotes checked out more than once, one row per checkout.
    """
    remote = (
        df["normalized_remote"]
        .astype("object")
        .map(lambda v: v.lower() if isinstance(v, str) else None)
    )
    df = df.assign(_remote=remote)
    hosted = df[(df["source_kind"] != "filesystem") & df["_remote"].notna()]
    checkouts = df[(df["source_kind"] == "filesystem") & df["_remote"].notna()]
    cloned = set(checkouts["_remote"])
    orgs = {_org(r) for r in hosted["_remote"]}

    def in_org(r: str) -> bool:
        o = _org(r)
        return o in orgs or any(o.startswith(x + "/") for x in orgs)

    counts = checkouts["_remote"].value_counts()
    twice = set(counts[counts > 1].index)
    keep = ["project_key", "name", "location", "source_kind", "scope_key", "normalized_remote"]
    # astype(bool): mapping an empty column yields no booleans, and a mask must be made of them
    outside = ~checkouts["_remote"].map(in_org).astype(bool)
    return {
        "not_cloned": hosted[~hosted["_remote"].isin(cloned)][keep].reset_index(drop=True),
        "outside_orgs": checkouts[outside][keep].reset_index(drop=True),
        "cloned_twice": checkouts[checkouts["_remote"].isin(twice)]
        .sort_values(["_remote", "location"])[keep]
        .reset_index(drop=True),
    }


def write_parquet(df: pd.DataFrame, path: str) -> None:
    """Write the frame as Parquet (needs pyarrow: ``pip install 'enum_pipeline[parquet]'``)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            "Parquet export needs pyarrow: pip install 'enum_pipeline[parquet]'"
        ) from err
    df.to_parquet(path, index=False)
