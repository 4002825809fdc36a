"""The canonical memory record, working-memory messages and search hits.

Field names are the ones every backend and the data-cloud sync use: ``id, text, user_id,
session_id, namespace, memory_type, topics, metadata, embedding, created_at, updated_at, ttl``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from primitives.errors import InvalidRecordError, InvalidRecordTypeError
from primitives.validation import (
    MAX_IDENTIFIER_CHARS as _MAX_ID,
    MAX_TOPICS,
    RECORD,
    check_aware_datetime,
    check_identifier,
    check_json_object,
    check_text,
    check_ttl,
    check_vector,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_TTLS",
    "default_ttls_from_env",
    "resolved_ttls",
    "INDEXED_METADATA_KEYS",
    "MemoryRecord",
    "MemoryType",
    "Message",
    "SearchHit",
    "check_memory_type",
    "check_topics",
    "trusted_record",
    "trusted_replace",
    "with_timestamps",
    "written_date",
]

DEFAULT_NAMESPACE = "default"

#: Metadata keys whose string values are indexed for keyword search together with ``text``:
#: ``speaker`` (who said it), ``context`` (the turn that preceded it in its session, set by
#: ``RememberPrimitive``) and ``resolved_dates`` (its relative dates written out against its
#: date, set by ``RememberPrimitive``: docs/temporal.md). Measured on LoCoMo: see
#: docs/in-memory-backend.md.
INDEXED_METADATA_KEYS: tuple[str, ...] = ("speaker", "context", "resolved_dates")


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


def resolved_ttls(default_ttls: Mapping[MemoryType, float | None]) -> dict[MemoryType, float]:
    """Seconds per memory type with "never" as ``math.inf``: a type missing from
    ``default_ttls``, or mapped to ``None``, never expires."""
    return {t: math.inf if default_ttls.get(t) is None else float(default_ttls[t]) for t in MemoryType}  # type: ignore[arg-type]


def _new_id() -> str:
    return uuid.uuid4().hex


_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MEMORY_TYPES: Mapping[str, MemoryType] = {t.value: t for t in MemoryType}


def _frozen_metadata(metadata: object, what: str = "metadata") -> Mapping[str, Any]:
    """A read-only, plain JSON copy of ``metadata`` (see
    :func:`~primitives.validation.check_json_object`), so a record handed out cannot be changed
    behind the store's back and every backend reads back the same value; the shared empty
    mapping when it is empty."""
    if metadata is None:
        return _EMPTY
    copy = check_json_object(metadata, what)
    return MappingProxyType(copy) if copy else _EMPTY


def check_memory_type(value: object, errors: tuple[type, type] = RECORD) -> MemoryType:
    """``value`` as a :class:`MemoryType` (a member or its string value).

    Raises:
        The family's value error naming the accepted values.
    """
    if type(value) is MemoryType:
        return value
    found = _MEMORY_TYPES.get(value) if isinstance(value, str) else None
    if found is None:
        accepted = ", ".join(_MEMORY_TYPES)
        raise errors[0](f"memory_type must be one of {accepted}; got {value!r}")
    return found


def check_topics(value: object, errors: tuple[type, type] = RECORD) -> tuple[str, ...]:
    """``value`` as a tuple of identifiers (order and repeats kept); ``None`` is no topics.

    Raises:
        The family's type error for a ``str`` or a non-sequence; its value error for a bad topic
        or more than :data:`~primitives.validation.MAX_TOPICS`.
    """
    if value is None:
        return ()
    if type(value) is not tuple:
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise errors[1](f"topics must be a list or tuple of str, got {type(value).__name__}")
        value = tuple(value)  # type: ignore[arg-type]
    if len(value) > MAX_TOPICS:
        raise errors[0](f"a record takes at most {MAX_TOPICS} topics, got {len(value)}")
    for topic in value:
        check_identifier(topic, "each topic", errors=errors)
    return tuple(str.__str__(t) if type(t) is not str else t for t in value)


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One long-term memory. Every field is checked here, once, identically for every backend
    (:mod:`primitives.validation`); what is accepted is stored and read back exactly.

    Attributes:
        text: What is remembered; any valid Unicode ``str`` (no lone surrogates; may be empty of
            indexable words, it is still stored; a backend may set a size limit).
        id: Unique key within its ``namespace``; a random UUID4 hex string by default. Adding a
            record whose ``(namespace, id)`` exists replaces it (upsert) and keeps the stored
            ``created_at``; the same id in another namespace is another record.
        user_id, session_id: Who and which conversation it belongs to; ``None`` for shared.
        namespace: A hard partition (tenant, app, conversation); ``"default"`` by default.
        memory_type: A :class:`MemoryType` (or its string value); ``episodic`` by default.
        topics: Tags for filtering, a tuple of identifiers (a list is converted; ``None`` is none;
            order and repeats are kept).
        metadata: A JSON object: ``str`` keys; ``None``, ``bool``, ``int``, finite ``float``,
            ``str``, lists (tuples become lists) and objects of them, at most 32 levels deep.
            Kept as a read-only copy (``types.MappingProxyType``; ``dict(record.metadata)`` for a
            mutable one); string values under :data:`INDEXED_METADATA_KEYS` are searchable.
        embedding: Optional ``tuple[float, ...]``, rounded to float32 (what every backend
            stores), finite; its length must be the store's ``dims`` when the store embeds.
        created_at, updated_at: Timezone-aware datetimes, kept in UTC; set by the backend when
            ``None``.
        ttl: Lifetime in seconds from the last write: ``(0, MAX_TTL]`` (10**12) or ``math.inf``
            (never expires); ``None`` takes the memory type's default from the backend (see
            :data:`DEFAULT_TTLS`). Kept as a ``float``.

    Identifiers (``id``, ``user_id``, ``session_id``, ``namespace``, each topic) are strings of 1
    to 1,024 characters, not only whitespace; any other character is kept exactly (``"alice "``
    and ``"alice"`` are two users).

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
        setattr_ = object.__setattr__
        text = self.text
        if type(text) is not str or not text.isascii():
            setattr_(self, "text", check_text(text, "text", errors=RECORD))
        # the common case (a short ASCII identifier) is checked inline: this runs on every add
        value = self.id
        if not (type(value) is str and value.isascii() and 0 < len(value) <= _MAX_ID and not value.isspace()):
            setattr_(self, "id", check_identifier(value, "id", errors=RECORD))
        value = self.namespace
        if not (type(value) is str and value.isascii() and 0 < len(value) <= _MAX_ID and not value.isspace()):
            setattr_(self, "namespace", check_identifier(value, "namespace", errors=RECORD))
        value = self.user_id
        if value is not None and not (
            type(value) is str and value.isascii() and 0 < len(value) <= _MAX_ID and not value.isspace()
        ):
            setattr_(self, "user_id", check_identifier(value, "user_id", errors=RECORD))
        value = self.session_id
        if value is not None and not (
            type(value) is str and value.isascii() and 0 < len(value) <= _MAX_ID and not value.isspace()
        ):
            setattr_(self, "session_id", check_identifier(value, "session_id", errors=RECORD))
        if type(self.memory_type) is not MemoryType:
            setattr_(self, "memory_type", check_memory_type(self.memory_type))
        if self.topics != ():
            setattr_(self, "topics", check_topics(self.topics))
        metadata = self.metadata
        if metadata is not _EMPTY:
            setattr_(self, "metadata", _frozen_metadata(metadata))
        if self.embedding is not None:
            setattr_(self, "embedding", check_vector(self.embedding, "embedding", errors=RECORD))
        for name in ("created_at", "updated_at"):
            value = getattr(self, name)
            if value is not None:
                setattr_(self, name, check_aware_datetime(value, name, errors=RECORD))
        if self.ttl is not None:
            setattr_(self, "ttl", check_ttl(self.ttl, errors=RECORD))

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
        """The inverse of :meth:`to_dict` (ISO 8601 datetimes parsed back, kept in UTC).

        Raises:
            InvalidRecordError: ``data`` is not a mapping, a field is missing or not accepted
                (``InvalidRecordTypeError`` for a wrong type), a timestamp does not parse.
        """
        if not isinstance(data, Mapping):
            raise InvalidRecordTypeError(f"a record dict must be a mapping, got {type(data).__name__}")
        try:
            return cls(
                text=data["text"],
                id=data["id"],
                user_id=data.get("user_id"),
                session_id=data.get("session_id"),
                namespace=data.get("namespace", DEFAULT_NAMESPACE),
                memory_type=data.get("memory_type", MemoryType.EPISODIC),
                topics=data.get("topics") or (),
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
        setattr_ = object.__setattr__
        setattr_(self, "role", check_identifier(self.role, "message role", errors=RECORD))
        content = self.content
        if type(content) is not str or not content.isascii():
            setattr_(self, "content", check_text(content, "message content", errors=RECORD))
        if self.created_at is not None:
            setattr_(self, "created_at", check_aware_datetime(self.created_at, "message created_at", errors=RECORD))
        if self.metadata is not _EMPTY:
            setattr_(self, "metadata", _frozen_metadata(self.metadata, "message metadata"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict`.

        Raises:
            InvalidRecordError: ``data`` is not a mapping, a field is missing or not accepted.
        """
        if not isinstance(data, Mapping):
            raise InvalidRecordTypeError(f"a message dict must be a mapping, got {type(data).__name__}")
        try:
            return cls(data["role"], data["content"], _parse_dt(data.get("created_at")), data.get("metadata") or {})
        except KeyError as exc:
            raise InvalidRecordError(f"message dict has no {exc.args[0]!r}") from None

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
        "session_id", "topics", "created_at"}``, JSON-ready (``created_at`` ISO 8601 in UTC or
        ``None``): ``MemoryPrimitive``'s keys per hit plus the record's scope and topics."""
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
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecordError(f"timestamp {value[:40]!r} is not ISO 8601") from None


def with_timestamps(record: MemoryRecord, created_at: datetime, updated_at: datetime) -> MemoryRecord:
    """A copy of ``record`` with the given timestamps, for backends stamping what they store.

    Equivalent to ``dataclasses.replace(record, created_at=..., updated_at=...)`` but skips the
    re-validation of fields that were validated when ``record`` was built (a tenth of the cost).
    """
    return _stamped(record, created_at, updated_at)


def trusted_replace(record: MemoryRecord, **changes: Any) -> MemoryRecord:
    """A copy of ``record`` with ``changes``, not validated again: for backends changing fields
    they produced themselves (an embedding from the embedder, a stored timestamp). Each value
    must already be in its final form (a float32-rounded tuple for ``embedding``, a UTC datetime)."""
    copy = _copy(record)
    for name, value in changes.items():
        _SLOT_BY_NAME[name].__set__(copy, value)
    return copy


_SLOTS = tuple(getattr(MemoryRecord, f.name) for f in fields(MemoryRecord))
_SLOT_BY_NAME = {f.name: getattr(MemoryRecord, f.name) for f in fields(MemoryRecord)}


def _compile_copiers() -> tuple[Any, Any]:
    """Straight-line slot copies of a record (as :mod:`dataclasses` generates ``__init__``): one
    C-level descriptor call per field instead of a loop; 3x faster, and this runs on every add."""
    names = list(_SLOT_BY_NAME)
    scope: dict[str, Any] = {f"set_{n}": slot.__set__ for n, slot in _SLOT_BY_NAME.items()}
    scope["_new"], scope["_cls"] = object.__new__, MemoryRecord
    body = "".join(f"    set_{n}(out, record.{n})\n" for n in names if n not in ("created_at", "updated_at"))
    exec(  # noqa: S102 - the source is built from the dataclass's own field names only
        "def _copy(record):\n    out = _new(_cls)\n" + body
        + "    set_created_at(out, record.created_at)\n    set_updated_at(out, record.updated_at)\n    return out\n"
        + "def _stamped(record, created_at, updated_at):\n    out = _new(_cls)\n" + body
        + "    set_created_at(out, created_at)\n    set_updated_at(out, updated_at)\n    return out\n",
        scope,
    )
    return scope["_copy"], scope["_stamped"]


_copy, _stamped = _compile_copiers()


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

