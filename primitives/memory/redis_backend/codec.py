"""Records and messages to and from what Redis stores, and how damage is told apart from data.

A record is one hash (:mod:`~primitives.memory.redis_backend.keys` for its key). Its fields, all
UTF-8 text except ``vector``:

| field | holds |
|---|---|
| ``id``, ``namespace``, ``memory_type`` | the values as given |
| ``text`` | the text as given (not indexed) |
| ``terms`` | :func:`index_terms`: the in-process analyzer's terms of the text and of the ``speaker`` and ``context`` metadata strings, space-separated, indexed as TEXT ``NOSTEM`` |
| ``date`` | the analyzer's terms of the written-out ``created_at`` date (``8 may 2023``), indexed the same way |
| ``user_id``, ``session_id`` | the values as given; absent for ``None`` |
| ``topics`` | a JSON array of the topics, in order; absent when there are none |
| ``tag_namespace``, ``tag_user_id``, ``tag_session_id``, ``tag_memory_type`` | :func:`~primitives.memory.redis_backend.schema.encode_tag` of the value, indexed as TAG |
| ``tag_topics`` | the encoded topics joined with ``,``, indexed as TAG |
| ``metadata`` | a JSON object |
| ``created_at``, ``updated_at`` | seconds since the epoch with 6 decimals, indexed as NUMERIC |
| ``created_at_us``, ``updated_at_us`` | exact microseconds since the epoch (RediSearch returns NUMERIC fields rounded) |
| ``ttl`` | seconds as given (``repr`` of the float, ``inf`` for never); absent for the default |
| ``vector`` | the embedding as little-endian float32 bytes |

Reading is strict, field by field, so that one damaged value (bytes that are not UTF-8, JSON that
does not parse, a timestamp that is not a number, a missing field, a non-finite float) costs that
record only: :func:`decode_record` raises :class:`~primitives.errors.CorruptRecordError` naming
the key and what is wrong, and the caller skips (searches) or raises (``get``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from primitives.errors import CorruptRecordError, PrimitivesError
from primitives.memory.record import (
    INDEXED_METADATA_KEYS,
    MemoryRecord,
    MemoryType,
    Message,
    written_date,
)
from primitives.memory.redis_backend.keys import record_key
from primitives.memory.redis_backend.schema import ANALYZER, TAG_FIELDS, TAG_SEPARATOR, encode_tag
from primitives.validation import MAX_IDENTIFIER_CHARS, MAX_TTL, RECORD, check_json_object

__all__ = [
    "RETURN_FIELDS",
    "check_stored",
    "decode_checked",
    "decode_message",
    "decode_record",
    "date_terms",
    "diagnose",
    "dt_from_us",
    "encode_message",
    "encode_record",
    "pack_vector",
    "index_terms",
    "record_size",
    "unpack_vector",
    "seconds",
    "us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MEMORY_TYPES: dict[bytes, MemoryType] = {t.value.encode(): t for t in MemoryType}
_TYPE_TAGS: dict[MemoryType, str] = {t: encode_tag(t.value) for t in MemoryType}

#: Fields a search returns per hit (``FT.SEARCH ... RETURN``): what :func:`decode_record` needs,
#: without the indexed copies. ``vector`` is added when no embedder is configured (a record's own
#: embedding is then returned by searches, as in process).
RETURN_FIELDS: tuple[str, ...] = (
    "id", "text", "user_id", "session_id", "namespace", "memory_type", "topics",
    "metadata", "created_at_us", "updated_at_us", "ttl",
)


# -- numbers -------------------------------------------------------------------------------------

def seconds(dt: datetime) -> str:
    """Seconds since the epoch with microseconds, as a decimal string (for NUMERIC fields);
    before 1970 the sign leads (``-1.500000``), so the stored number orders as the time does
    (what a ``created_at`` range filter compares: ``query.decimal_seconds``)."""
    delta = dt - _EPOCH
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    whole, frac = divmod(abs(us), 1_000_000)
    return f"{'-' if us < 0 else ''}{whole}.{frac:06d}"


def us(dt: datetime) -> str:
    """Exact microseconds since the epoch, as a decimal string."""
    delta = dt - _EPOCH
    return str((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def dt_from_us(raw: bytes | str | int) -> datetime:
    """The UTC datetime of microseconds since the epoch.

    Raises:
        ValueError: ``raw`` is not an integer; OverflowError: out of the datetime range.
    """
    return _EPOCH + timedelta(microseconds=int(raw))


_STRUCTS: dict[int, struct.Struct] = {}


def pack_vector(vector: Sequence[float]) -> bytes:
    """A vector as little-endian float32 bytes (RediSearch's FLOAT32 blob)."""
    n = len(vector)
    packer = _STRUCTS.get(n) or _STRUCTS.setdefault(n, struct.Struct(f"<{n}f"))
    return packer.pack(*vector)


def unpack_vector(blob: bytes) -> tuple[float, ...]:
    """The vector :func:`pack_vector` packed (float32 values as Python floats)."""
    n = len(blob) // 4
    packer = _STRUCTS.get(n) or _STRUCTS.setdefault(n, struct.Struct(f"<{n}f"))
    return packer.unpack(blob)


# -- records -------------------------------------------------------------------------------------

def record_size(record: MemoryRecord) -> int:
    """Bytes of a record that count against ``max_record_bytes``: UTF-8 ``text`` plus the
    metadata JSON."""
    text = record.text
    size = len(text) if text.isascii() else len(text.encode())
    if record.metadata:
        size += len(json.dumps(dict(record.metadata), ensure_ascii=False).encode())
    return size


# Why the Redis backend indexes the in-process analyzer's terms rather than the text (measured
# on RediSearch 2.10.5, character by character): RediSearch splits words only at ASCII
# punctuation, space and tab (a newline, a NUL, which even ends the indexed text, another control
# character, a backslash, non-ASCII punctuation and spaces, emoji and combining marks stay inside
# a word); it splits at an apostrophe, where the analyzer keeps an inner one; it does not
# case-fold non-ASCII letters ("École" is not found by "école"); it stems only words of 4
# characters or more (MINSTEMLEN), and its stop words would drop a stem that happens to be one
# ("doing" is stemmed to "do"). With the analyzer's terms in a NOSTEM field of an index without
# stop words, a search finds exactly the records the in-process backend finds.


def date_terms(dt: datetime) -> str:
    """The ``date`` field: :func:`index_terms` of the written-out date of ``dt``."""
    return _date_terms(dt.year, dt.month, dt.day)


@lru_cache(maxsize=1024)
def _date_terms(year: int, month: int, day: int) -> str:
    return index_terms(written_date(datetime(year, month, day)))


def index_terms(*texts: str) -> str:
    """The in-process analyzer's terms of ``texts`` (case-folded words, stop words dropped,
    Snowball-stemmed: :class:`~primitives.memory.analysis.Analyzer`), space-separated, in order,
    repeats kept (term frequency counts), each apostrophe escaped (``\\'``) so RediSearch keeps it
    inside the term. What the ``terms`` and ``date`` fields hold."""
    terms = ANALYZER.terms("\n".join(texts) if len(texts) != 1 else texts[0])
    joined = " ".join(terms)
    return joined.replace("'", "\\'") if "'" in joined else joined


def encode_record(record: MemoryRecord, *, index_dates: bool) -> list[str]:
    """The hash of a timestamped record as ``[field, value, ...]``, starting with
    ``created_at_us`` and ``created_at`` (the Lua upsert replaces those two with a stored
    ``created_at``). The vector is not included (it is binary: it travels apart)."""
    created, updated = record.created_at, record.updated_at
    assert created is not None and updated is not None
    namespace = record.namespace
    metadata = record.metadata
    created_us, created_s = us(created), seconds(created)
    updated_us, updated_s = (created_us, created_s) if updated == created else (us(updated), seconds(updated))
    pairs = [
        "created_at_us", created_us, "created_at", created_s,
        "id", record.id,
        "namespace", namespace, "tag_namespace", encode_tag(namespace),
        "memory_type", record.memory_type.value, "tag_memory_type", _TYPE_TAGS[record.memory_type],
        "metadata", json.dumps(dict(metadata), ensure_ascii=False) if metadata else "{}",
        "updated_at", updated_s, "updated_at_us", updated_us,
    ]
    pairs += ("text", record.text)
    if record.user_id is not None:
        pairs += ("user_id", record.user_id, "tag_user_id", encode_tag(record.user_id))
    if record.session_id is not None:
        pairs += ("session_id", record.session_id, "tag_session_id", encode_tag(record.session_id))
    if record.topics:
        pairs += (
            "topics", json.dumps(list(record.topics), ensure_ascii=False),
            "tag_topics", TAG_SEPARATOR.join(dict.fromkeys(encode_tag(t) for t in record.topics)),
        )
    if record.ttl is not None:
        pairs += ("ttl", repr(record.ttl))
    texts = [record.text]
    if metadata:
        for key in INDEXED_METADATA_KEYS:
            value = metadata.get(key)
            if isinstance(value, str):
                texts.append(value)
    pairs += ("terms", index_terms(*texts))
    if index_dates:
        pairs += ("date", date_terms(created))
    return pairs


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_no_constant)


def _identifier(raw: bytes) -> str:
    value = raw.decode()
    if value and not value.isspace() and len(value) <= MAX_IDENTIFIER_CHARS:
        return value
    raise ValueError(f"{value[:40]!r} is not an identifier")


def _optional_identifier(raw: bytes | None) -> str | None:
    return None if raw is None else _identifier(raw)


#: Stored namespace, user and session values already checked by :func:`_identifier`, raw bytes
#: to text: few distinct values recur in every search reply, and the check is a pure function
#: of the bytes, so a value seen before is not decoded and checked again. Cleared when full.
_IDENTIFIERS: dict[bytes, str] = {}
_IDENTIFIERS_MAX = 4096


def _known_identifier(raw: bytes) -> str:
    value = _identifier(raw)  # raises before anything is remembered
    if len(_IDENTIFIERS) >= _IDENTIFIERS_MAX:
        _IDENTIFIERS.clear()
    _IDENTIFIERS[raw] = value
    return value


def _text(raw: bytes) -> str:
    return raw.decode()


def _json(raw: bytes) -> Any:
    text = raw.decode()
    value = _JSON.decode(text)
    if "\\u" in text and ("\\ud" in text.lower()):
        # an escaped UTF-16 surrogate: valid JSON, but a lone one is not valid Unicode text
        check_json_object({"v": value}, errors=RECORD)
    return value


def _metadata(raw: bytes | None) -> Mapping[str, Any]:
    if raw is None or raw == b"{}":
        return _EMPTY
    value = _json(raw)
    if type(value) is not dict:
        raise ValueError(f"not a JSON object but a {type(value).__name__}")
    return MappingProxyType(value) if value else _EMPTY


def _topics(raw: bytes | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    value = _json(raw)
    if type(value) is not list or not all(type(t) is str and t.strip() and len(t) <= MAX_IDENTIFIER_CHARS for t in value):
        raise ValueError("not a JSON array of identifiers")
    return tuple(value)


def _memory_type(raw: bytes) -> MemoryType:
    found = _MEMORY_TYPES.get(raw)
    if found is None:
        raise ValueError(f"{raw[:40]!r} is not a memory type")
    return found


def _ttl(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    value = float(raw)
    if not (0 < value <= MAX_TTL or value == math.inf):
        raise ValueError(f"{value!r} is not a ttl in (0, {MAX_TTL}] or inf")
    return value


def _datetime(raw: bytes) -> datetime:
    if not raw.isdigit() and not (raw[:1] == b"-" and raw[1:].isdigit()):
        raise ValueError(f"{raw[:40]!r} is not an integer")
    return _EPOCH + timedelta(microseconds=int(raw))


def _vector(raw: bytes | None, dims: int | None = None) -> tuple[float, ...] | None:
    if not raw:
        return None
    n, rest = divmod(len(raw), 4)
    if rest:
        raise ValueError(f"{len(raw)} bytes is not a whole number of float32")
    if dims is not None and n != dims:
        raise ValueError(f"{n} floats, the index has {dims} dims")
    packer = _STRUCTS.get(n) or _STRUCTS.setdefault(n, struct.Struct(f"<{n}f"))
    vector = packer.unpack(raw)
    if not math.isfinite(sum(vector)):
        raise ValueError("it holds NaN or an infinity")
    return vector


# MemoryRecord's slot setters: a stored record is built without re-validation (it was validated
# on the way in; each value read back is checked here instead)
_new = object.__new__
_SETTERS = {f.name: getattr(MemoryRecord, f.name).__set__ for f in dataclass_fields(MemoryRecord)}
_set_id, _set_text, _set_user, _set_session, _set_namespace, _set_memory_type = (
    _SETTERS[n] for n in ("id", "text", "user_id", "session_id", "namespace", "memory_type"))
_set_topics, _set_metadata, _set_embedding, _set_created, _set_updated, _set_ttl = (
    _SETTERS[n] for n in ("topics", "metadata", "embedding", "created_at", "updated_at", "ttl"))
assert len(_SETTERS) == 12, "decode_record sets every MemoryRecord field: update it with the record"

#: Field -> (required, parser), in the order a damaged record is diagnosed.
_PARSERS: dict[bytes, tuple[bool, Callable[[Any], Any]]] = {
    b"id": (True, _identifier),
    b"namespace": (True, _identifier),
    b"text": (True, _text),
    b"memory_type": (True, _memory_type),
    b"user_id": (False, _optional_identifier),
    b"session_id": (False, _optional_identifier),
    b"topics": (False, _topics),
    b"metadata": (False, _metadata),
    b"created_at_us": (True, _datetime),
    b"updated_at_us": (True, _datetime),
    b"ttl": (False, _ttl),
}
_ERRORS = (KeyError, ValueError, TypeError, OverflowError, struct.error, PrimitivesError)


def _shown(raw: bytes) -> str:
    text = raw[:40].decode("utf-8", "backslashreplace")
    return repr(text) + ("..." if len(raw) > 40 else "")


def diagnose(fields: Mapping[bytes, bytes], *, dims: int | None = None) -> str | None:
    """What makes a stored record undecodable, in words (the first problem found), or ``None``."""
    for name, (required, parse) in _PARSERS.items():
        raw = fields.get(name)
        if raw is None:
            if required:
                return f"field {name.decode()!r} is missing"
            continue
        try:
            parse(raw)
        except UnicodeDecodeError as exc:
            return f"field {name.decode()!r} is not UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at {exc.start})"
        except _ERRORS as exc:
            return f"field {name.decode()!r} = {_shown(raw)}: {exc}"
    raw = fields.get(b"vector")
    try:
        _vector(raw, dims)
    except _ERRORS as exc:
        return f"field 'vector' ({len(raw or b'')} bytes): {exc}"
    return None


def decode_record(fields: Mapping[bytes, bytes], key: str, *, dims: int | None = None, vector: bool = True) -> MemoryRecord:
    """The record stored as ``fields`` (a hash or a search hit's returned fields, bytes to bytes).

    Args:
        fields: Field name to raw value.
        key: Where it is stored, for the error.
        dims: The vector length the index expects (``None``: any).
        vector: Decode the ``vector`` field into ``embedding`` (else ``embedding`` is ``None``).

    Raises:
        CorruptRecordError: a required field is missing or a value does not decode (its
            ``reason`` says which and why).
    """
    get = fields.get
    known = _IDENTIFIERS.get
    try:
        # the hot path of every search hit: inline, each value decoded strictly once (a
        # namespace, user or session value seen before: not again, see _IDENTIFIERS)
        record = _new(MemoryRecord)
        _set_id(record, _identifier(fields[b"id"]))
        _set_text(record, fields[b"text"].decode())
        raw = get(b"user_id")
        _set_user(record, None if raw is None else known(raw) or _known_identifier(raw))
        raw = get(b"session_id")
        _set_session(record, None if raw is None else known(raw) or _known_identifier(raw))
        raw = fields[b"namespace"]
        _set_namespace(record, known(raw) or _known_identifier(raw))
        memory_type = _MEMORY_TYPES.get(fields[b"memory_type"])
        _set_memory_type(record, memory_type if memory_type is not None else _memory_type(fields[b"memory_type"]))
        raw = get(b"topics")
        _set_topics(record, () if raw is None else _topics(raw))
        raw = get(b"metadata")
        _set_metadata(record, _EMPTY if raw is None or raw == b"{}" else _metadata(raw))
        raw = get(b"vector") if vector else None
        _set_embedding(record, _vector(raw, dims) if raw else None)
        created_raw, updated_raw = fields[b"created_at_us"], fields[b"updated_at_us"]
        created = _datetime(created_raw)
        _set_created(record, created)
        _set_updated(record, created if updated_raw == created_raw else _datetime(updated_raw))
        raw = get(b"ttl")
        _set_ttl(record, None if raw is None else _ttl(raw))
        return record
    except _ERRORS as exc:
        reason = diagnose(fields, dims=dims if vector else None) or f"{type(exc).__name__}: {exc}"
        raise CorruptRecordError(f"the record at {key!r} cannot be decoded: {reason}", key=key, reason=reason) from None


def decode_checked(
    fields: Mapping[bytes, bytes], key: str, rec_prefix: str, *, dims: int | None = None
) -> MemoryRecord:
    """:func:`decode_record`, and also what a reader or the index would trip on later: its
    NUMERIC fields must parse (else RediSearch leaves the record out of the index), its TAG
    fields must encode its values (else filters would not match what it says), and it must sit
    at the key its ``(namespace, id)`` names. For direct reads and scans, not for search hits.

    Raises:
        CorruptRecordError: the first problem found, in ``reason``.
    """
    record = decode_record(fields, key, dims=dims)
    reason = _inconsistency(fields, record, key, rec_prefix)
    if reason is not None:
        raise CorruptRecordError(f"the record at {key!r} is damaged: {reason}", key=key, reason=reason)
    return record


def _inconsistency(fields: Mapping[bytes, bytes], record: MemoryRecord, key: str, rec_prefix: str) -> str | None:
    for name in (b"created_at", b"updated_at"):
        raw = fields.get(name)
        try:
            ok = raw is not None and math.isfinite(float(raw))
        except ValueError:
            ok = False
        if not ok:
            return f"field {name.decode()!r} = {_shown(raw or b'')} is not a number (the index leaves the record out)"
    expected = {
        "namespace": encode_tag(record.namespace),
        "memory_type": _TYPE_TAGS[record.memory_type],
        "user_id": None if record.user_id is None else encode_tag(record.user_id),
        "session_id": None if record.session_id is None else encode_tag(record.session_id),
    }
    for name, want in expected.items():
        got = fields.get(TAG_FIELDS[name].encode())
        if (got.decode("ascii", "replace") if got is not None else None) != want:
            return f"field {TAG_FIELDS[name]!r} does not encode its {name} (filters would not match it)"
    tags = fields.get(b"tag_topics")
    got_topics = set(tags.decode("ascii", "replace").split(TAG_SEPARATOR)) if tags else set()
    if got_topics != {encode_tag(t) for t in record.topics}:
        return "field 'tag_topics' does not encode its topics (filters would not match them)"
    if record_key(rec_prefix, record.namespace, record.id) != key:
        return f"it holds record {record.id!r} of namespace {record.namespace!r}, which belongs at another key"
    return None


def check_stored(
    fields: Mapping[bytes, bytes], key: str, rec_prefix: str, *, dims: int | None = None
) -> str | None:
    """What is wrong with a stored record hash (:func:`decode_checked`), in words, or ``None``
    when it is sound."""
    if not fields:
        return "the hash is empty"
    try:
        decode_checked(fields, key, rec_prefix, dims=dims)
    except CorruptRecordError as exc:
        return exc.reason
    return None


# -- working-memory messages ---------------------------------------------------------------------

def encode_message(message: Message, now: datetime) -> str:
    """One list item: ``{"role", "content", "created_at" (microseconds, a string), "metadata"}``
    as JSON; a message without ``created_at`` is stamped ``now``."""
    return json.dumps(
        {
            "role": message.role,
            "content": message.content,
            "created_at": us(message.created_at or now),
            "metadata": dict(message.metadata),
        },
        ensure_ascii=False,
    )


def decode_message(raw: bytes, key: str) -> Message:
    """A list item back to a :class:`Message` (validated again: it is not ours until it parses).

    Raises:
        CorruptRecordError: the item is not UTF-8, not JSON, or not a message.
    """
    try:
        data = _json(raw)
        if type(data) is not dict:
            raise ValueError(f"not a JSON object but a {type(data).__name__}")
        created = data.get("created_at")
        if type(created) is not str:
            raise ValueError(f"created_at {created!r} is not a string of microseconds")
        metadata = data.get("metadata") or {}
        return Message(data["role"], data["content"], _datetime(created.encode()), metadata)
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at {exc.start})"
    except KeyError as exc:
        reason = f"no {exc.args[0]!r}"
    except _ERRORS as exc:
        reason = str(exc)
    raise CorruptRecordError(f"the message at {key} cannot be decoded: {reason}", key=key, reason=reason)
