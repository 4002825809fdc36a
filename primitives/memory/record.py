"""The canonical memory record, working-memory messages and search hits.

Field names are the ones every backend and the data-cloud sync use: ``id, text, user_id,
session_id, namespace, memory_type, topics, metadata, embedding, created_at, updated_at, ttl``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from primitives.errors import InvalidRecordError, InvalidRecordTypeError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_TTLS",
    "default_ttls_from_env",
    "INDEXED_METADATA_KEYS",
    "MemoryRecord",
    "MemoryType",
    "Message",
    "SearchHit",
    "trusted_record",
    "with_timestamps",
    "written_date",
]

DEFAULT_NAMESPACE = "default"

#: Metadata keys whose string values are indexed for keyword search together with ``text``:
#: ``speaker`` (who said it) and ``context`` (the turn that preceded it in its session, set by
#: ``RememberPrimitive``). Measured on LoCoMo: see docs/in-memory-backend.md.
INDEXED_METADATA_KEYS: tuple[str, ...] = ("speaker", "context")


class MemoryType(StrEnum):
    """Kinds of memory, each with its own default lifetime (:data:`DEFAULT_TTLS`)."""

    WORKING = "working"
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    SKILL = "skill"


#: Default ``ttl`` in seconds per memory type, applied when a record's ``ttl`` is ``None``:
#: working 1 h, episodic 30 d, semantic 90 d, skill 180 d. ``None`` would mean "never expires".
DEFAULT_TTLS: Mapping[MemoryType, float | None] = {
    MemoryType.WORKING: 3600.0,
    MemoryType.EPISODIC: 30 * 86400.0,
    MemoryType.SEMANTIC: 90 * 86400.0,
    MemoryType.SKILL: 180 * 86400.0,
}

_NEVER = ("none", "never", "inf", "infinity")


def default_ttls_from_env(env: Mapping[str, str]) -> dict[MemoryType, float | None]:
    """:data:`DEFAULT_TTLS` with overrides from ``MEMORY_TTL_WORKING``, ``MEMORY_TTL_EPISODIC``,
    ``MEMORY_TTL_SEMANTIC`` and ``MEMORY_TTL_SKILL``: seconds ``> 0``, or ``never`` (also
    ``none``/``inf``) for no expiry. Unset or empty keeps the default.

    Raises:
        ConfigurationError: a value is neither a number of seconds > 0 nor ``never``.
    """
    from primitives.errors import ConfigurationError

    ttls: dict[MemoryType, float | None] = dict(DEFAULT_TTLS)
    for memory_type in MemoryType:
        name = f"MEMORY_TTL_{memory_type.value.upper()}"
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        if raw.lower() in _NEVER:
            ttls[memory_type] = None
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be seconds > 0 or 'never', got {raw!r}") from None
        if not value > 0 or value == float("inf"):
            raise ConfigurationError(f"{name} must be seconds > 0 or 'never', got {raw!r}")
        ttls[memory_type] = value
    return ttls


def _new_id() -> str:
    return uuid.uuid4().hex


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_metadata(metadata: object) -> Mapping[str, Any]:
    """A read-only copy of a JSON-object-like mapping (so a record handed out cannot be changed
    behind the index's back); the shared empty mapping when it is empty."""
    if type(metadata) is MappingProxyType:
        return metadata  # already frozen by an earlier record (copies share it)
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidRecordTypeError("metadata must be a JSON object: a dict with str keys")
    return MappingProxyType(dict(metadata)) if metadata else _EMPTY


def _check_str(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        accepted = "a str or None" if optional else "a str"
        raise InvalidRecordTypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRecordError(f"{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One long-term memory.

    Attributes:
        text: What is remembered; any ``str`` (unicode, up to the backend's size limit; may be
            empty of indexable words, it is still stored).
        id: Unique key within a store; a random UUID4 hex string by default. Adding a record whose
            id exists replaces it (upsert) and keeps the stored ``created_at``.
        user_id, session_id: Who and which conversation it belongs to; ``None`` for shared.
        namespace: A hard partition (tenant, app, conversation); ``"default"`` by default.
        memory_type: A :class:`MemoryType` (or its string value); ``episodic`` by default.
        topics: Tags for filtering, a tuple of non-empty strings (a list is converted).
        metadata: A JSON object (``dict`` with ``str`` keys), kept as a read-only copy
            (``types.MappingProxyType``; ``dict(record.metadata)`` for a mutable one); string
            values under :data:`INDEXED_METADATA_KEYS` are searchable.
        embedding: Optional ``tuple[float, ...]`` of length ``dims``.
        created_at, updated_at: UTC datetimes; set by the backend when ``None``.
        ttl: Lifetime in seconds from the last write, ``> 0``; ``None`` takes the memory type's
            default from the backend (see :data:`DEFAULT_TTLS`); ``math.inf`` never expires.

    Raises:
        InvalidRecordTypeError: A field has the wrong type (a ``TypeError``).
        InvalidRecordError: A field has a value that is not accepted (a ``ValueError``).
    """

    text: str
    id: str = field(default_factory=_new_id)
    user_id: str | None = None
    session_id: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    memory_type: MemoryType = MemoryType.EPISODIC
    topics: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    embedding: tuple[float, ...] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ttl: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidRecordTypeError(f"text must be a str, got {type(self.text).__name__}")
        _check_str("id", self.id, optional=False)
        _check_str("user_id", self.user_id, optional=True)
        _check_str("session_id", self.session_id, optional=True)
        _check_str("namespace", self.namespace, optional=False)
        if type(self.memory_type) is not MemoryType:
            try:
                object.__setattr__(self, "memory_type", MemoryType(self.memory_type))
            except ValueError:
                accepted = ", ".join(m.value for m in MemoryType)
                raise InvalidRecordError(
                    f"memory_type must be one of {accepted}; got {self.memory_type!r}"
                ) from None
        if type(self.topics) is not tuple:
            if isinstance(self.topics, str) or not hasattr(self.topics, "__iter__"):
                raise InvalidRecordTypeError(
                    f"topics must be a list or tuple of str, got {type(self.topics).__name__}"
                )
            object.__setattr__(self, "topics", tuple(self.topics))
        for topic in self.topics:
            _check_str("each topic", topic, optional=False)
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))
        if self.embedding is not None:
            if isinstance(self.embedding, (str, bytes)) or not hasattr(self.embedding, "__iter__"):
                raise InvalidRecordTypeError("embedding must be a sequence of floats or None")
            object.__setattr__(self, "embedding", tuple(float(x) for x in self.embedding))
        for name in ("created_at", "updated_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise InvalidRecordTypeError(f"{name} must be a timezone-aware datetime or None")
        if self.ttl is not None:
            if isinstance(self.ttl, bool) or not isinstance(self.ttl, (int, float)):
                raise InvalidRecordTypeError(
                    f"ttl must be a number of seconds or None, got {type(self.ttl).__name__}"
                )
            if not self.ttl > 0:  # also rejects NaN
                raise InvalidRecordError(f"ttl must be > 0 seconds (or None), got {self.ttl!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field: datetimes as ISO 8601 strings (UTC offset kept),
        ``memory_type`` as its string value, ``topics`` and ``embedding`` as lists."""
        return {
            "id": self.id,
            "text": self.text,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "namespace": self.namespace,
            "memory_type": self.memory_type.value,
            "topics": list(self.topics),
            "metadata": dict(self.metadata),
            "embedding": list(self.embedding) if self.embedding is not None else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "ttl": self.ttl,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryRecord:
        """The inverse of :meth:`to_dict` (ISO 8601 datetimes parsed back, UTC offset kept).

        Raises:
            InvalidRecordError: a field is missing or not accepted.
        """
        try:
            return cls(
                text=data["text"],
                id=data["id"],
                user_id=data.get("user_id"),
                session_id=data.get("session_id"),
                namespace=data.get("namespace", DEFAULT_NAMESPACE),
                memory_type=data.get("memory_type", MemoryType.EPISODIC),
                topics=tuple(data.get("topics") or ()),
                metadata=data.get("metadata") or {},
                embedding=data.get("embedding"),
                created_at=_parse_dt(data.get("created_at")),
                updated_at=_parse_dt(data.get("updated_at")),
                ttl=data.get("ttl"),
            )
        except KeyError as exc:
            raise InvalidRecordError(f"record dict has no {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class Message:
    """One working-memory message of a session.

    Attributes:
        role: ``"user"``, ``"assistant"``, ``"system"`` or ``"tool"`` (any non-empty string is kept).
        content: The message text.
        created_at: UTC time the backend stored it; set by the backend when ``None``.
        metadata: A JSON object of extra facts (speaker name, ids, ...), kept read-only.
    """

    role: str
    content: str
    created_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise InvalidRecordTypeError("message role must be a non-empty str")
        if not isinstance(self.content, str):
            raise InvalidRecordTypeError(
                f"message content must be a str, got {type(self.content).__name__}"
            )
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict`."""
        return cls(data["role"], data["content"], _parse_dt(data.get("created_at")), data.get("metadata") or {})

    def to_dict(self) -> dict[str, Any]:
        """``{"role", "content", "created_at" (ISO 8601 or None), "metadata"}``."""
        return {
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result.

    Attributes:
        record: The stored record.
        score: Relevance, higher is better; its scale depends on the ranking (BM25 scores are
            ``>= 0`` and unbounded, see the backend's docs), so compare scores within one result only.
    """

    record: MemoryRecord
    score: float

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "text", "score", "metadata", "memory_type", "namespace", "user_id",
        "session_id", "topics", "created_at"}``: what ``MemoryPrimitive`` outputs per hit."""
        r = self.record
        return {
            "id": r.id,
            "text": r.text,
            "score": self.score,
            "metadata": dict(r.metadata),
            "memory_type": r.memory_type.value,
            "namespace": r.namespace,
            "user_id": r.user_id,
            "session_id": r.session_id,
            "topics": list(r.topics),
            "created_at": r.created_at.isoformat() if r.created_at else None,
        }


def _parse_dt(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise InvalidRecordTypeError(f"timestamps must be ISO 8601 strings, got {type(value).__name__}")
    return datetime.fromisoformat(value)


def with_timestamps(record: MemoryRecord, created_at: datetime, updated_at: datetime) -> MemoryRecord:
    """A copy of ``record`` with the given timestamps, for backends stamping what they store.

    Equivalent to ``dataclasses.replace(record, created_at=..., updated_at=...)`` but skips the
    re-validation of fields that were validated when ``record`` was built (half the cost).
    """
    copy = object.__new__(MemoryRecord)
    for slot in _SLOTS:
        slot.__set__(copy, slot.__get__(record))
    object.__setattr__(copy, "created_at", created_at)
    object.__setattr__(copy, "updated_at", updated_at)
    return copy


_SLOTS = tuple(getattr(MemoryRecord, f.name) for f in fields(MemoryRecord))
_SLOT_BY_NAME = {f.name: getattr(MemoryRecord, f.name) for f in fields(MemoryRecord)}


def trusted_record(**values: Any) -> MemoryRecord:
    """A ``MemoryRecord`` built without validation, for backends decoding what they stored
    themselves (already validated on the way in). Every field must be given, already in its
    final type (``metadata`` as a read-only mapping, ``topics`` as a tuple)."""
    record = object.__new__(MemoryRecord)
    for name, slot in _SLOT_BY_NAME.items():
        slot.__set__(record, values[name])
    return record


_MONTHS = (
    "", "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)


def written_date(dt: datetime) -> str:
    """``dt``'s date as words are written ("8 May 2023"), the form every backend indexes a
    record's ``created_at`` in (measured on LoCoMo: docs/in-memory-backend.md)."""
    return f"{dt.day} {_MONTHS[dt.month]} {dt.year}"


def utc_from_timestamp(ts: float) -> datetime:
    """UTC datetime for a POSIX timestamp in seconds."""
    return datetime.fromtimestamp(ts, timezone.utc)

