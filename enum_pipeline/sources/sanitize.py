"""The one sanitising boundary: what the database cannot take never reaches staging.

Every record of every source passes ``screen`` on its way to staging (``scan.stage_sources``).
It returns the record as it is, or a ``Rejected`` with the reason the database would turn it
back for, so the record is quarantined (listed in ``quarantined_records``, its scope made
incomplete) instead of failing its batch and the run:

- a NUL (``\\x00``) or a lone surrogate (``\\ud800``) in any text, JSON keys and values included
  (PostgreSQL text and ``jsonb`` hold no NUL; no driver encodes a lone surrogate to UTF-8);
- a key-like text (``project_key``, ``scope_key``: the indexed ones) over ``KEY_MAX_BYTES``
  UTF-8 bytes (PostgreSQL's btree takes at most ~2704 bytes an index row);
- a text over its column's length (``BOUNDED``: ``varchar(n)`` columns) or a required text
  missing;
- ``stars`` that is not an integer within int64, a JSON float that is not finite (``NaN``,
  ``Infinity``: not JSON), a JSON value the staging encoder cannot encode.

It is on the path every staged record takes, so the common case is a handful of C calls: the
record's texts, JSON keys and string values joined into one string (a nested or float
attribute: the text staging's own JSON encoder makes of them), checked once for NUL and for
UTF-8. Only a suspicious record is looked at field by field.
The store's staging has a fallback for whatever this does not foresee (it bisects a batch the
database turns back).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from enum_pipeline.sources.base import ProjectRecord

#: The most UTF-8 bytes a key-like text (``project_key``, ``scope_key``) may have.
KEY_MAX_BYTES = 2048
KEY_FIELDS = ("project_key", "scope_key")
#: Texts stored in ``varchar(n)`` columns: the most characters each may have (schema.py;
#: ``test_quarantine`` checks the two agree).
BOUNDED = {"source_kind": 32, "vcs": 16, "head_commit": 64, "visibility": 16}
REQUIRED_TEXT = ("project_key", "scope_key", "source_kind", "name", "location")
#: Every optional text field of a record (derived, so a new field is screened too).
OPTIONAL_TEXT = tuple(f.name for f in fields(ProjectRecord) if f.type == "str | None")
JSON_FIELDS = ("attributes", "remotes", "topics", "markers")
INT64 = 2**63
#: How much of a key or a reason a quarantine keeps (characters, after escaping).
SAFE_LENGTH = 300


# Staging's JSON encoder (store/staging.py): the same text the database will be sent.
if c_make_encoder is not None:
    _chunks = c_make_encoder(None, str, encode_basestring, None, ": ", ", ", True, False, True)

    def _encode(value: Any) -> str:
        return "".join(_chunks(value, 0))
else:  # pragma: no cover - an interpreter without the C accelerator
    _encode = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode


@dataclass(frozen=True)
class Rejected:
    """A record the database cannot take, and why."""

    record: ProjectRecord
    reason: str


def screen(record: ProjectRecord) -> ProjectRecord | Rejected:
    """``record`` itself when the database can take it, else ``Rejected`` with the reason."""
    r = record
    attributes = r.attributes
    encoded = ""
    try:
        text = _joined(r)  # a text that is not one raises
        if attributes:
            for value in attributes.values():
                if type(value) is str:
                    text += value
                elif type(value) not in _FLAT:  # nested, a float, an object: what is sent
                    encoded = _encode(attributes)
                    text += encoded
                    break
    except Exception:  # noqa: BLE001 - a text that is not one, a value JSON cannot say
        return _rejected_or(r)
    if "\x00" in text or (encoded and _suspicious_json(encoded)):
        return _rejected_or(r)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _rejected_or(r)
    vcs, head_commit, visibility, stars = r.vcs, r.head_commit, r.visibility, r.stars
    if (
        len(r.project_key) > _KEY_CHARS
        or len(r.scope_key) > _KEY_CHARS
        or len(r.source_kind) > _SOURCE_KIND
        or (vcs is not None and len(vcs) > _VCS)
        or (head_commit is not None and len(head_commit) > _HEAD_COMMIT)
        or (visibility is not None and len(visibility) > _VISIBILITY)
        or (stars is not None and not (type(stars) is int and -INT64 <= stars < INT64))
    ):
        return _rejected_or(r)
    return r


def _joined_builder():
    """``_joined(r)``: every text of ``r`` in one string (None as empty), its markers, remotes
    and topics, its attributes' keys; generated from the field lists (one tuple display, no
    loop: the fastest Python has), as staging generates its row function."""
    texts = [f"r.{n}" for n in REQUIRED_TEXT] + [f"r.{n} or ''" for n in OPTIONAL_TEXT]
    body = (
        f"return {_SEPARATOR!r}.join(({', '.join(texts)}, *r.markers, *(r.remotes or ()), "
        "*(r.remotes.values() if r.remotes else ()), *(r.topics or ()), *(r.attributes or ())))"
    )
    namespace: dict[str, Any] = {}
    exec(f"def _joined(r):\n    {body}\n", namespace)  # noqa: S102 - our own text
    return namespace["_joined"]


_SEPARATOR = "\x1f"
_joined = _joined_builder()
# A key of at most this many characters is within KEY_MAX_BYTES whatever they are.
_KEY_CHARS = KEY_MAX_BYTES // 4
_SOURCE_KIND, _VCS, _HEAD_COMMIT, _VISIBILITY = (
    BOUNDED[n] for n in ("source_kind", "vcs", "head_commit", "visibility")
)
# JSON values whose text is themselves (str) or cannot hold a bad character.
_FLAT = {str, int, bool, type(None)}


def _suspicious_json(encoded: str) -> bool:
    """The encoder wrote a NUL escaped, or a non-finite float (which is not JSON)."""
    return "\\u0000" in encoded or "NaN" in encoded or "Infinity" in encoded


def _rejected_or(r: ProjectRecord) -> ProjectRecord | Rejected:
    """A suspicious record, looked at field by field: ``r`` itself when nothing is wrong after
    all (a "NaN" or an escaped ``\\u0000`` in plain text, a long key within the byte limit)."""
    reason = _explain(r)
    return r if reason is None else Rejected(r, reason)


def _explain(r: ProjectRecord) -> str | None:
    """Why the database cannot take ``r``, field by field; None when it can."""
    for name in REQUIRED_TEXT + OPTIONAL_TEXT:
        value = getattr(r, name)
        if value is None and name not in REQUIRED_TEXT:
            continue
        if type(value) is not str:
            return f"{name} is {type(value).__name__}, not text"
        why = _text_problem(value)
        if why:
            return f"{name} {why}"
    for name in JSON_FIELDS:
        value = getattr(r, name)
        if value is None:
            continue
        try:
            _encode(sorted(value) if name == "markers" else value)
        except Exception as err:  # noqa: BLE001 - whatever the encoder refuses
            return f"{name} cannot be encoded as JSON: {type(err).__name__}: {err}"
        why = _json_problem(value, name)
        if why:
            return why
    return _size_problem(r)


def _size_problem(r: ProjectRecord) -> str | None:
    for name in KEY_FIELDS:
        size = len(getattr(r, name).encode("utf-8"))
        if size > KEY_MAX_BYTES:
            return f"{name} is {size} UTF-8 bytes, over the {KEY_MAX_BYTES} a key may have"
    for name, limit in BOUNDED.items():
        value = getattr(r, name)
        if value is not None and len(value) > limit:
            return f"{name} is {len(value)} characters, over its column's {limit}"
    stars = r.stars
    if stars is not None and not (type(stars) is int and -INT64 <= stars < INT64):
        return f"stars {_short(repr(stars), 60)} is not an integer within int64"
    return None


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return f"holds a NUL character at {value.index(chr(0))}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate {value[err.start]!a} at {err.start}"
    return None


def _json_problem(value: Any, where: str) -> str | None:
    """The first text, key or number in a JSON value that the database cannot take."""
    if isinstance(value, str):
        why = _text_problem(value)
        return f"{where} {why}" if why else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, not a JSON number"
    if isinstance(value, dict):
        for k, v in value.items():
            inner = f"{where}[{_short(ascii(k), 40)}]"
            why = _json_problem(k, f"{inner} (key)") if isinstance(k, str) else None
            why = why or _json_problem(v, inner)
            if why:
                return why
    elif isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            why = _json_problem(v, f"{where}[{i}]")
            if why:
                return why
    elif not isinstance(value, int | bool) and value is not None:
        return _json_problem(str(value), where)  # the encoder says it as its str()
    return None


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…"


def safe_text(value: Any, limit: int = SAFE_LENGTH) -> str:
    """``value`` as text any database takes: control characters, NUL and lone surrogates
    escaped (``\\x00``, ``\\ud800``), cut to ``limit`` characters with how long it was."""
    if not isinstance(value, str):
        value = repr(value)
    escaped = value.translate(_ESCAPES) if not value.isprintable() else value
    if any(0xD800 <= ord(c) <= 0xDFFF for c in escaped):
        escaped = "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in escaped)
    if len(escaped) > limit:
        size = len(value.encode("utf-8", "surrogatepass"))
        escaped = f"{escaped[:limit]}… ({size} bytes)"
    return escaped


_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
