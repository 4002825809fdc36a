"""The canonical row: one memory record (or its tombstone) as a warehouse or lake holds it.

A :class:`SyncRow` carries plain values only (strings, floats, UTC datetimes, a JSON object, a
float32 vector), so this layer knows nothing of :mod:`primitives.memory`; the memory layer converts
records to and from rows. Every target stores the same columns (names configurable per target with
:class:`ColumnMap`):

=============  =====================================================================================
column         meaning
=============  =====================================================================================
namespace      hard partition; with ``id`` the primary key
id             unique within its namespace
user_id        owner, or NULL
session_id     conversation, or NULL
memory_type    ``working`` / ``episodic`` / ``semantic`` / ``skill``
text           what is remembered ("" for a tombstone)
topics         JSON array of strings (order and repeats kept)
metadata       JSON object
embedding      float32 vector, or NULL (a target that cannot hold vectors leaves the column out)
ttl            lifetime in seconds from ``updated_at``; NULL: the memory type's default; ``inf``:
               never expires (stored as the JSON-safe text form by targets without infinities)
created_at     UTC, microseconds
updated_at     UTC, microseconds: the last write, or the delete for a tombstone
deleted_at     UTC, microseconds, for a tombstone; NULL for a live record
version        tiebreak of last-writer-wins between two rows with the same ``updated_at``:
               the SHA-256 hex of the row's content (:func:`row_version`; a tombstone's starts with
               ``t``, so a delete wins a tie), so every side picks the same winner without
               coordination
origin         the store that last wrote the row (:func:`store identity <primitives.sync>`), so an
               import skips rows that came from the store it writes to (no ping-pong)
=============  =====================================================================================

Ordering (:meth:`SyncRow.sort_key`): ``updated_at``, then ``namespace``, then ``id`` — the keyset
order of every cursor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from primitives.errors import InvalidInputError
from primitives.validation import (
    MAX_IDENTIFIER_CHARS,
    RECORD,
    check_aware_datetime,
    check_identifier,
    check_json_object,
    check_text,
    check_ttl,
    check_vector,
)

__all__ = [
    "COLUMNS",
    "from_micros",
    "from_micros_or_raw",
    "micros",
    "MEMORY_TYPES",
    "ColumnMap",
    "Cursor",
    "RejectedRow",
    "SyncRow",
    "row_from_mapping",
    "row_version",
]

#: Canonical column names, in table order.
COLUMNS: Final = (
    "namespace", "id", "user_id", "session_id", "memory_type", "text", "topics", "metadata",
    "embedding", "ttl", "created_at", "updated_at", "deleted_at", "version", "origin",
)
#: Accepted ``memory_type`` values (those of :class:`primitives.memory.MemoryType`).
MEMORY_TYPES: Final = ("working", "episodic", "semantic", "skill")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_VERSION = re.compile(r"[0-9a-f]{64}|t[0-9a-f]{63}")


def micros(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, unlike ``timestamp()``)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """The aware UTC datetime ``us`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=us)


def from_micros_or_raw(us: Any) -> Any:
    """:func:`from_micros` of a stored value; ``None`` stays ``None`` and a value beyond Python's
    datetimes is returned as is (the row check then rejects that row; the page still reads)."""
    if us is None:
        return None
    try:
        return from_micros(int(us))
    except (OverflowError, ValueError, TypeError):
        return us


_micros = micros


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position: what comes strictly after ``(updated_at, namespace, id)``. On a target the
    time is the rows' ``updated_at`` (keyset order); in a store (export) it is when the store
    received the change (:mod:`primitives.memory.changes`)."""

    updated_at: datetime
    namespace: str = ""
    id: str = ""

    def key(self) -> tuple[int, str, str]:
        return (_micros(self.updated_at), self.namespace, self.id)

    def to_text(self) -> str:
        """A JSON form for state tables (microseconds since the epoch, namespace, id)."""
        return json.dumps([_micros(self.updated_at), self.namespace, self.id], ensure_ascii=True)

    @classmethod
    def from_text(cls, text: str) -> Cursor:
        """Inverse of :meth:`to_text`.

        Raises:
            InvalidInputError: ``text`` is not a cursor this class wrote.
        """
        try:
            us, namespace, id = json.loads(text)
            if not (isinstance(us, int) and isinstance(namespace, str) and isinstance(id, str)):
                raise TypeError
            return cls(datetime.fromtimestamp(0, timezone.utc) + _delta_us(us), namespace, id)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(f"not a sync cursor: {text[:80]!r}") from exc

    @classmethod
    def after_time(cls, at: datetime) -> Cursor:
        """The cursor just before every row updated at or after ``at`` (``--since``)."""
        at = check_aware_datetime(at, "since")
        # a namespace is at most MAX_IDENTIFIER_CHARS characters, so this one sorts after all
        return cls(at - _delta_us(1), "\U0010ffff" * (MAX_IDENTIFIER_CHARS + 1), "")


def _delta_us(us: int) -> timedelta:
    return timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class SyncRow:
    """One record or tombstone in canonical form (see the module docstring for each column).

    Build rows with :func:`row_from_mapping` (checks every field) or from a memory record in the
    memory layer; ``version`` is filled from the content when empty.
    """

    namespace: str
    id: str
    text: str
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    session_id: str | None = None
    memory_type: str = "episodic"
    topics: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    embedding: tuple[float, ...] | None = None
    ttl: float | None = None
    deleted_at: datetime | None = None
    version: str = ""
    origin: str | None = None

    def __post_init__(self) -> None:
        if not self.version:
            object.__setattr__(self, "version", row_version(self))

    @property
    def is_tombstone(self) -> bool:
        return self.deleted_at is not None

    def sort_key(self) -> tuple[int, str, str]:
        """Keyset order: ``(updated_at in µs, namespace, id)``."""
        return (_micros(self.updated_at), self.namespace, self.id)

    def cursor(self) -> Cursor:
        return Cursor(self.updated_at, self.namespace, self.id)

    def wins_over(self, other: SyncRow) -> bool:
        """Last writer wins: the later ``updated_at``; on a tie the larger ``version``; an
        identical row does not win (rewriting it would change nothing)."""
        a, b = _micros(self.updated_at), _micros(other.updated_at)
        return a > b or (a == b and self.version > other.version)

    def with_origin(self, origin: str | None) -> SyncRow:
        return replace(self, origin=origin)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types: datetimes as ISO 8601 with ``+00:00``, ``ttl`` inf as ``"inf"``."""
        return {
            "namespace": self.namespace,
            "id": self.id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "memory_type": self.memory_type,
            "text": self.text,
            "topics": list(self.topics),
            "metadata": dict(self.metadata),
            "embedding": list(self.embedding) if self.embedding is not None else None,
            "ttl": "inf" if self.ttl is not None and math.isinf(self.ttl) else self.ttl,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "deleted_at": self.deleted_at.isoformat() if self.deleted_at else None,
            "version": self.version,
            "origin": self.origin,
        }


def row_version(row: SyncRow) -> str:
    """SHA-256 hex of the row's content (every column but ``version`` and ``origin``, in a
    canonical JSON form): equal content, equal version, on every machine. A tombstone's starts
    with ``t`` (then 63 hex digits), so at equal ``updated_at`` a delete wins over a write on every
    target, as it does in the store."""
    payload = [
        row.namespace, row.id, row.user_id, row.session_id, row.memory_type, row.text,
        list(row.topics), row.metadata,
        # the vector's float32 bytes: exact, and far cheaper than a text form of each value
        hashlib.sha256(struct.pack(f"<{len(row.embedding)}f", *row.embedding)).hexdigest() if row.embedding is not None else None,
        None if row.ttl is None else float(row.ttl).hex(),
        _micros(row.created_at), _micros(row.updated_at),
        _micros(row.deleted_at) if row.deleted_at is not None else None,
    ]
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    # a delete beats a write of the same microsecond, as in the store (put_if_newer refuses a
    # version not newer than a delete): "t" sorts after every hex digit
    return "t" + digest[:63] if row.deleted_at is not None else digest


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row a sync could not use: where it came from, the key it named (as far as readable),
    why, and the raw values (JSON text) for whoever fixes it."""

    source: str
    namespace: str | None
    id: str | None
    reason: str
    raw: str
    rejected_at: datetime


def _when(value: object, name: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{name} is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        # warehouses hand back naive UTC for TIMESTAMP columns
        value = value.replace(tzinfo=timezone.utc)
    return check_aware_datetime(value, name, errors=RECORD)


def _json_value(value: object, name: str) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise InvalidInputError(f"{name} is not valid JSON") from None
    return value


def row_from_mapping(values: Mapping[str, Any], *, dims: int | None = None) -> SyncRow:
    """Check a row read from a target (canonical column names) and build a :class:`SyncRow`.

    Accepts datetimes (naive ones are taken as UTC) or ISO 8601 strings for timestamps, JSON
    text or decoded values for ``topics`` and ``metadata``, a list or float32 little-endian
    bytes for ``embedding``, a number, ``"inf"`` or NULL for ``ttl``. A stored ``version`` (64
    hex digits) is kept, else it is computed from the content (a row edited in the warehouse
    should get a new ``updated_at``, which decides before ``version`` does).

    Raises:
        InvalidInputError: a field is missing or not acceptable; the message names it (this is
            the reason a rejected-rows table records).
    """
    for name in ("namespace", "id", "created_at", "updated_at"):
        if values.get(name) is None:
            raise InvalidInputError(f"{name} is missing")
    namespace = check_identifier(values["namespace"], "namespace", errors=RECORD)
    id = check_identifier(values["id"], "id", errors=RECORD)
    memory_type = values.get("memory_type") or "episodic"
    if memory_type not in MEMORY_TYPES:
        raise InvalidInputError(f"memory_type must be one of {', '.join(MEMORY_TYPES)}, got {str(memory_type)[:40]!r}")
    topics = _json_value(values.get("topics"), "topics")
    if topics is None:
        topics = ()
    if not isinstance(topics, (list, tuple)):
        raise InvalidInputError("topics must be a JSON array of strings")
    topics = tuple(check_identifier(t, "each topic", errors=RECORD) for t in topics)
    metadata = _json_value(values.get("metadata"), "metadata")
    metadata = check_json_object({} if metadata is None else metadata, errors=RECORD)
    embedding = values.get("embedding")
    if isinstance(embedding, (bytes, bytearray, memoryview)):
        import array

        raw = bytes(embedding)
        if len(raw) % 4:
            raise InvalidInputError("embedding bytes are not float32")
        arr = array.array("f")
        arr.frombytes(raw)
        embedding = arr.tolist()
    if embedding is not None:
        embedding = check_vector(list(embedding), errors=RECORD)
        if dims is not None and len(embedding) != dims:
            raise InvalidInputError(f"embedding has {len(embedding)} dims, the store takes {dims}")
    ttl = values.get("ttl")
    if ttl is not None:
        if ttl in ("inf", "Infinity"):
            ttl = math.inf
        ttl = check_ttl(ttl, "ttl", errors=RECORD)
    deleted_at = values.get("deleted_at")
    version = values.get("version")
    if not (isinstance(version, str) and _VERSION.fullmatch(version)):
        version = ""  # computed from the content
    text = values.get("text")
    if text is None and deleted_at is not None:
        text = ""
    return SyncRow(
        namespace=namespace,
        id=id,
        text=check_text(text, "text", errors=RECORD),
        user_id=None if values.get("user_id") is None else check_identifier(values["user_id"], "user_id", errors=RECORD),
        session_id=None if values.get("session_id") is None else check_identifier(values["session_id"], "session_id", errors=RECORD),
        memory_type=memory_type,
        topics=topics,
        metadata=metadata,
        embedding=embedding,
        ttl=ttl,
        created_at=_when(values["created_at"], "created_at"),
        updated_at=_when(values["updated_at"], "updated_at"),
        deleted_at=None if deleted_at is None else _when(deleted_at, "deleted_at"),
        version=version,
        origin=values.get("origin") if isinstance(values.get("origin"), str) else None,
    )


class ColumnMap:
    """Canonical column name -> the target's column name (default: the same names).

    Args:
        names: Overrides, e.g. ``{"text": "content", "updated_at": "modified_at"}``.

    Raises:
        InvalidInputError: an unknown canonical name, a name that is not an identifier-like
            string, or two columns mapped to one name.
    """

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        names = dict(names or {})
        unknown = sorted(set(names) - set(COLUMNS))
        if unknown:
            raise InvalidInputError(f"unknown sync columns {unknown}; the columns are {', '.join(COLUMNS)}")
        mapping = {c: names.get(c, c) for c in COLUMNS}
        for canonical, name in mapping.items():
            if not isinstance(name, str) or not name.replace("_", "a").isalnum() or not name[:1].isalpha():
                raise InvalidInputError(
                    f"column name for {canonical} must be letters, digits and _ starting with a letter, got {name!r}"
                )
        if len(set(mapping.values())) != len(mapping):
            raise InvalidInputError("two sync columns are mapped to the same name")
        self.names: dict[str, str] = mapping

    def __getitem__(self, canonical: str) -> str:
        return self.names[canonical]

    def to_canonical(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A row keyed by the target's names -> keyed by canonical names."""
        return {c: values.get(n) for c, n in self.names.items()}


def sort_rows(rows: Sequence[SyncRow]) -> list[SyncRow]:
    """Rows in keyset order."""
    return sorted(rows, key=SyncRow.sort_key)
