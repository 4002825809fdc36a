"""Conversions between the canonical record model and the Agent Memory Server's (AMS 0.15.2)
wire format, and the search requests built from a seam filter. Pure functions, no I/O.

What AMS long-term records lack, and where the backend keeps it:

- Exact timestamps: AMS stores ``created_at``/``updated_at`` as float seconds, but reads them
  back through RediSearch, which returns NUMERIC fields with 12 significant digits (10 ms today).
  The exact microseconds travel in the carrier below; AMS's own value wins when the two differ
  by more than 20 ms (another client edited the record, e.g. ``PATCH``, which keeps the carrier).
- ``metadata`` (AMS records have no such field), a ``ttl`` (AMS has forgetting policies, not
  per-record expiry) and the ``skill`` memory type (AMS knows ``episodic``, ``semantic`` and
  ``message``) travel in the same *carrier*, one value in the record's ``extracted_from`` list:
  ``"memory-primitives:v1:" + base64url(JSON)``. ``extracted_from`` is a provenance TAG that
  AMS 0.15.2 stores and returns verbatim and never rewrites (its topic and entity extraction
  touch ``topics`` and ``entities``; see ``long_term_memory.extract_memory_structure``).
- Memory types: ``working`` <-> ``message``, ``episodic`` <-> ``episodic``, ``semantic`` <->
  ``semantic``, ``skill`` -> ``semantic`` plus the carrier (so a ``semantic`` search filter on
  the server is narrowed again here).
- Working-memory messages have no metadata in AMS either: a message's metadata is kept in the
  session's ``data`` object under :data:`DATA_KEY` (``{"message_metadata": {message_id: {...}}}``).
- A record's own ``embedding`` is not stored: AMS embeds ``text`` itself with its configured
  model.
- ``entities`` holds ``mp-id:<AMS id>`` (:data:`ID_ENTITY`): the key for finding many records by
  id in one request.

Every string a user gave that reaches an AMS search is either a TAG filter value (sent through
:func:`tag_out`, which encodes what the server's escaping misses, escaped by the server's RedisVL
``Tag`` filter, then checked again here for exact equality, because RediSearch TAG matching is
case-insensitive and the server drops some filters when they match nothing) or query words made
of letters and digits only (:func:`query_words`), so no query syntax passes. Ids reach URL paths
percent-encoded, after :func:`id_out`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from primitives.errors import (
    InvalidRecordError,
    InvalidRecordTypeError,
    RecordTooLargeError,
)
from primitives.memory.record import (
    DEFAULT_NAMESPACE,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
)
from primitives.memory.redis_query import query_words

__all__ = [
    "AMS_MODES",
    "appended",
    "ENCODED_MARK",
    "id_out",
    "tag_in",
    "tag_out",
    "CARRIER_PREFIX",
    "ID_ENTITY",
    "lookup_payload",
    "DATA_KEY",
    "check_batch",
    "check_storable",
    "expired",
    "hit_from_ams",
    "matches",
    "message_from_ams",
    "message_to_ams",
    "parse_time",
    "record_from_ams",
    "record_to_ams",
    "search_payload",
    "session_messages",
    "server_filter",
    "query_words",
]

#: Marks the carrier value in ``extracted_from``.
CARRIER_PREFIX = "memory-primitives:v1:"
#: Each record carries ``ID_ENTITY + <AMS id>`` in ``entities``, so the stored versions of a batch
#: of ids are found with one search (``entities: {"any": [...]}``) instead of a request per id.
ID_ENTITY = "mp-id:"
#: Key of this package's entry in a working memory's ``data`` object.
DATA_KEY = "memory_primitives"
#: Seam search modes -> AMS ``SearchRequest.search_mode`` values.
AMS_MODES: Mapping[str, str] = {"keyword": "keyword", "vector": "semantic", "hybrid": "hybrid"}

_TO_AMS_TYPE = {
    MemoryType.WORKING: "message",
    MemoryType.EPISODIC: "episodic",
    MemoryType.SEMANTIC: "semantic",
    MemoryType.SKILL: "semantic",
}
_FROM_AMS_TYPE = {"message": MemoryType.WORKING, "episodic": MemoryType.EPISODIC, "semantic": MemoryType.SEMANTIC}


#: Marks a TAG value or id stored encoded, see :func:`tag_out`.
ENCODED_MARK = "mp64:"


def _encode(value: str) -> str:
    return ENCODED_MARK + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _plain_tag(value: str) -> bool:
    return (
        not value.startswith(ENCODED_MARK)
        and "," not in value
        and "|" not in value
        and value == value.strip()
        and all(ch == " " or (ch.isprintable() and not ch.isspace()) for ch in value)
    )


def tag_out(value: str) -> str:
    """``value`` as stored in (and filtered on in) an AMS TAG field (user, session, namespace,
    topic): itself when AMS can store and filter on it exactly, else ``"mp64:" +
    base64url(UTF-8)``. Why: AMS splits TAG values on ``,``; RediSearch trims the whitespace
    around a tag; and AMS escapes filter values with RedisVL's ``TokenEscaper``, which leaves
    ``|``, tabs and newlines alone, so ``user_id="a|b"`` would match ``a`` or ``b`` (and ``"|"``
    alone is a syntax error, HTTP 500). Values starting with the mark are encoded too, so
    :func:`tag_in` is exact."""
    return value if _plain_tag(value) else _encode(value)


def id_out(id: str) -> str:
    """An id (record or session) as AMS gets it: as :func:`tag_out` (ids are TAGs too), and also
    encoded when it has a ``/`` or is ``.``/``..`` (AMS addresses records and sessions as a URL
    path segment, where those cannot be expressed)."""
    return id if _plain_tag(id) and "/" not in id and id not in (".", "..") else _encode(id)


def tag_in(value: str) -> str:
    """The inverse of :func:`tag_out` and :func:`id_out`."""
    if value.startswith(ENCODED_MARK):
        body = value[len(ENCODED_MARK):]
        try:
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return value  # not encoded by us after all
    return value


def check_batch(records: Sequence[MemoryRecord], op: str, max_text_chars: int | None) -> None:
    """Refuse a whole batch before anything is sent.

    Raises:
        InvalidRecordTypeError: an item is not a ``MemoryRecord``.
        InvalidRecordError: empty text (:func:`check_storable`).
        RecordTooLargeError: a text longer than ``max_text_chars``: AMS embeds the whole text
            and an endpoint refusing long input leaves the whole request unindexed.
    """
    for record in records:
        if not isinstance(record, MemoryRecord):
            raise InvalidRecordTypeError(f"{op}() takes MemoryRecord objects, got {type(record).__name__}; nothing stored")
    for record in records:
        check_storable(record)
        if max_text_chars is not None and len(record.text) > max_text_chars:
            raise RecordTooLargeError(
                f"record {record.id!r} has {len(record.text)} characters, over max_text_chars={max_text_chars}: "
                "the Agent Memory Server embeds the whole text and its embedding endpoint refuses longer "
                "input; split the text; nothing stored"
            )


def check_storable(record: MemoryRecord) -> None:
    """Raise unless AMS can store ``record``.

    Raises:
        InvalidRecordError: empty or blank ``text``: AMS refuses it (and could not embed it).
    """
    if not record.text.strip():
        raise InvalidRecordError(
            f"record {record.id!r} has empty text; the Agent Memory Server refuses to store "
            "(and cannot embed) an empty memory"
        )


def _encode_carrier(extra: Mapping[str, Any]) -> str:
    raw = json.dumps(extra, ensure_ascii=False, separators=(",", ":")).encode()
    return CARRIER_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_carrier(value: str) -> dict[str, Any]:
    body = value[len(CARRIER_PREFIX):]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data if isinstance(data, dict) else {}


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def record_to_ams(record: MemoryRecord, prefix: str = "") -> dict[str, Any]:
    """The AMS ``MemoryRecord`` JSON for ``record`` (timestamps must be set).

    Args:
        record: What to store; ``created_at`` and ``updated_at`` are sent as given (AMS keeps
            client timestamps; stored as float seconds, exact to the microsecond until 2106).
        prefix: Prepended to ``id`` and ``namespace`` (a store's partition on a shared AMS).

    Returns:
        A dict for ``POST /v1/long-term-memory/`` (``memories`` item).
    """
    extra: dict[str, Any] = {"c": _micros(record.created_at), "u": _micros(record.updated_at)}  # type: ignore[arg-type]
    if record.memory_type is MemoryType.SKILL:
        extra["memory_type"] = record.memory_type.value
    if record.metadata:
        extra["metadata"] = dict(record.metadata)
    if record.ttl is not None:
        extra["ttl"] = record.ttl  # math.inf is written as Infinity (Python's json reads it)
    out: dict[str, Any] = {
        "id": prefix + id_out(record.id),
        "text": record.text,
        "namespace": prefix + tag_out(record.namespace),
        "memory_type": _TO_AMS_TYPE[record.memory_type],
        "created_at": _iso(record.created_at),  # type: ignore[arg-type]
        "updated_at": _iso(record.updated_at),  # type: ignore[arg-type]
        "last_accessed": _iso(record.updated_at),  # type: ignore[arg-type]
        "discrete_memory_extracted": "t",  # nothing for AMS's extraction to do on it
    }
    if record.user_id is not None:
        out["user_id"] = tag_out(record.user_id)
    if record.session_id is not None:
        out["session_id"] = tag_out(record.session_id)
    if record.topics:
        out["topics"] = [tag_out(t) for t in record.topics]
    out["entities"] = [ID_ENTITY + out["id"]]
    out["extracted_from"] = [_encode_carrier(extra)]
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SKEW = timedelta(milliseconds=20)


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _exact(ams_value: Any, micros: Any) -> datetime:
    """AMS's (rounded) timestamp, or the carrier's exact one when it agrees within 20 ms."""
    rounded = parse_time(ams_value)
    if isinstance(micros, int) and not isinstance(micros, bool):
        exact = _EPOCH + timedelta(microseconds=micros)
        if abs(exact - rounded) <= _SKEW:
            return exact
    return rounded


def parse_time(value: Any) -> datetime:
    """An aware datetime from an AMS timestamp (ISO 8601 string, ``Z`` accepted, or datetime);
    naive values are taken as UTC."""
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def record_from_ams(data: Mapping[str, Any], prefix: str = "") -> MemoryRecord | None:
    """The canonical record for an AMS record JSON object, or ``None`` when it is not in the
    partition ``prefix`` (its id or namespace lacks the prefix).

    A record without a namespace is in :data:`~primitives.memory.record.DEFAULT_NAMESPACE`
    (only visible with an empty ``prefix``). Unknown AMS memory types read as ``episodic``.
    """
    id = data.get("id") or ""
    namespace = data.get("namespace") or ""
    if prefix:
        if not id.startswith(prefix) or not namespace.startswith(prefix):
            return None
        id, namespace = id[len(prefix):], namespace[len(prefix):]
    user_id, session_id = data.get("user_id"), data.get("session_id")
    extra: dict[str, Any] = {}
    for value in data.get("extracted_from") or ():
        if isinstance(value, str) and value.startswith(CARRIER_PREFIX):
            try:
                extra = _decode_carrier(value)
            except (ValueError, TypeError):  # not ours after all: ignore it
                extra = {}
            break
    memory_type = extra.get("memory_type") or _FROM_AMS_TYPE.get(str(data.get("memory_type")), MemoryType.EPISODIC)
    ttl = extra.get("ttl")
    return MemoryRecord(
        text=data.get("text") or "",
        id=tag_in(id),
        user_id=tag_in(user_id) if user_id else None,
        session_id=tag_in(session_id) if session_id else None,
        namespace=tag_in(namespace) if namespace else DEFAULT_NAMESPACE,
        memory_type=memory_type,
        topics=tuple(tag_in(t) for t in data.get("topics") or ()),
        metadata=extra.get("metadata") or {},
        created_at=_exact(data["created_at"], extra.get("c")),
        updated_at=_exact(data["updated_at"], extra.get("u")),
        ttl=float(ttl) if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) else None,
    )


def expired(
    record: MemoryRecord, now: datetime, default_ttls: Mapping[MemoryType, float | None] | None = None
) -> bool:
    """Whether ``record``'s lifetime (seconds from ``updated_at``) has run out at ``now``: its own
    ``ttl``, else its memory type's entry in ``default_ttls`` (``None``: never expires)."""
    ttl = record.ttl
    if ttl is None and default_ttls is not None:
        ttl = default_ttls.get(record.memory_type)
    if ttl is None or math.isinf(ttl):
        return False
    return record.updated_at + timedelta(seconds=ttl) <= now  # type: ignore[operator]


def hit_from_ams(
    data: Mapping[str, Any],
    prefix: str,
    tag_filter: Mapping[str, Sequence[str]],
    now: datetime,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    default_ttls: Mapping[MemoryType, float | None] | None = None,
) -> SearchHit | None:
    """A search hit for an AMS result, or ``None`` unless it is in the partition, unexpired and
    matches the filter and the ``created_at`` bounds exactly. Its score is AMS's normalised
    ``score`` (or ``1 - dist`` from a server that sends none)."""
    record = record_from_ams(data, prefix)
    if (record is None or expired(record, now, default_ttls) or not matches(record, tag_filter)
            or (created_after is not None and record.created_at < created_after)  # type: ignore[operator]
            or (created_before is not None and record.created_at > created_before)):  # type: ignore[operator]
        return None
    score = data.get("score")
    if score is None:
        score = max(0.0, 1.0 - float(data.get("dist") or 0.0))
    return SearchHit(record, float(score))


def _tag_filter(values: Sequence[str], prefix: str = "") -> dict[str, Any]:
    out = [prefix + tag_out(v) for v in values]
    return {"eq": out[0]} if len(out) == 1 else {"any": out}


def server_filter(tag_filter: Mapping[str, Sequence[str]], prefix: str = "") -> dict[str, Any]:
    """AMS ``SearchRequest`` filter fields for a normalised seam filter
    (:func:`~primitives.memory.backend.normalize_filter`).

    ``user_id``, ``session_id``, ``namespace``: ``{"eq": v}`` or ``{"any": [...]}`` of
    :func:`tag_out` values;
    ``topics``: ``{"any": [...]}``; ``memory_type``: the AMS types the asked types map to. With a
    ``prefix`` the namespaces are prefixed, and a filter without a namespace is limited to the
    partition with ``{"startswith": prefix}``. The server's matching is a superset of the seam's
    (case-insensitive tags, ``skill`` stored as ``semantic``): :func:`matches` narrows it.
    """
    out: dict[str, Any] = {}
    for field in ("user_id", "session_id"):
        if field in tag_filter:
            out[field] = _tag_filter(tag_filter[field])
    if "namespace" in tag_filter:
        out["namespace"] = _tag_filter(tag_filter["namespace"], prefix)
    elif prefix:
        out["namespace"] = {"startswith": prefix}
    if "topics" in tag_filter:
        out["topics"] = {"any": [tag_out(t) for t in tag_filter["topics"]]}
    if "memory_type" in tag_filter:
        types = list(dict.fromkeys(_TO_AMS_TYPE[MemoryType(t)] for t in tag_filter["memory_type"]))
        out["memory_type"] = {"eq": types[0]} if len(types) == 1 else {"any": types}
    return out


def matches(record: MemoryRecord, tag_filter: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``record`` satisfies a normalised seam filter exactly (case-sensitive; topics:
    any of; the other fields: one of)."""
    for field, values in tag_filter.items():
        if field == "topics":
            if not any(t in values for t in record.topics):
                return False
        elif field == "memory_type":
            if record.memory_type.value not in values:
                return False
        elif getattr(record, field) not in values:
            return False
    return True


def search_payload(
    text: str,
    mode: str,
    tag_filter: Mapping[str, Sequence[str]],
    *,
    limit: int,
    offset: int,
    prefix: str = "",
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    hybrid_alpha: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/long-term-memory/search``.

    Args:
        text: What to send as the query: for ``keyword``/``hybrid`` the words from
            :func:`query_words` joined by spaces; for ``vector`` the user's text (only embedded,
            never parsed); ``""`` for a filter-only listing.
        mode: A seam mode (``keyword``, ``vector``, ``hybrid``).
        limit: 1..100 (AMS's bound).
        created_after, created_before: Bounds on ``created_at`` (inclusive). AMS compares whole
            seconds (``int(timestamp)``), so the upper bound is rounded up and the exact bounds
            are checked again by the caller.
        hybrid_alpha: Weight of vector similarity in hybrid mode (AMS default 0.7).

    Recency re-ranking is switched off (``recency_boost: false``): it reorders by age and makes
    every search write ``last_accessed`` back in the background.
    """
    body: dict[str, Any] = {
        "text": text,
        "search_mode": AMS_MODES[mode],
        "limit": limit,
        "offset": offset,
        "recency_boost": False,
        **server_filter(tag_filter, prefix),
    }
    if created_after is not None or created_before is not None:
        bounds: dict[str, str] = {}
        if created_after is not None:
            bounds["gte"] = _iso(created_after)
        if created_before is not None:
            ceil = created_before.replace(microsecond=0)
            if ceil < created_before:
                ceil += timedelta(seconds=1)
            bounds["lte"] = _iso(ceil)
        body["created_at"] = bounds
    if hybrid_alpha is not None and mode == "hybrid":
        body["hybrid_alpha"] = hybrid_alpha
    return body


def lookup_payload(ams_ids: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """A filter-only listing (empty text, keyword mode: no soft-filter fallback) of the records
    whose ``entities`` hold one of ``ams_ids`` (at most 100, AMS's page size)."""
    body: dict[str, Any] = {
        "text": "",
        "search_mode": "keyword",
        "limit": len(ams_ids),
        "offset": 0,
        "recency_boost": False,
        "entities": {"any": [ID_ENTITY + i for i in ams_ids]},
    }
    if prefix:
        body["namespace"] = {"startswith": prefix}
    return body


def message_to_ams(message: Message, id: str, now: datetime) -> dict[str, Any]:
    """AMS ``MemoryMessage`` JSON for ``message``, ``created_at`` defaulting to ``now``."""
    return {
        "id": id,
        "role": message.role,
        "content": message.content,
        "created_at": _iso(message.created_at or now),
    }


def message_from_ams(data: Mapping[str, Any], metadata: Mapping[str, Any]) -> Message:
    """The seam ``Message`` for an AMS message JSON object; ``metadata`` is the session's
    ``data[DATA_KEY]["message_metadata"]`` map."""
    meta = metadata.get(str(data.get("id")))
    return Message(
        str(data["role"]),
        str(data.get("content") or ""),
        parse_time(data["created_at"]),
        meta if isinstance(meta, dict) else {},
    )


def session_messages(memory: Mapping[str, Any]) -> list[Message]:
    """The messages of an AMS working-memory JSON object, oldest first, with the metadata kept
    under ``data[DATA_KEY]["message_metadata"]``."""
    ours = (memory.get("data") or {}).get(DATA_KEY)
    metadata = (ours.get("message_metadata") if isinstance(ours, dict) else None) or {}
    return [message_from_ams(m, metadata) for m in memory.get("messages") or ()]


def words_for(query: str) -> str:
    """The query AMS keyword and hybrid searches get: :func:`query_words` (letters and digits,
    case-folded, stop words dropped, repeats dropped) joined by spaces; ``""`` when none."""
    return " ".join(query_words(query))


def unique(ids: Iterable[str]) -> list[str]:
    """``ids`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(ids))


def appended(
    memory: Mapping[str, Any],
    messages: Sequence[Message],
    ids: Sequence[str],
    now: datetime,
    size: int,
    ttl: float | None,
) -> dict[str, Any]:
    """The fields of the AMS working memory that results from appending ``messages`` (with
    message ``ids``) to ``memory`` (a session's JSON; ``{}`` for a new one): its last ``size``
    messages, their metadata under ``data[DATA_KEY]["message_metadata"]`` (other ``data`` keys,
    ``memories`` and ``context`` kept), ``ttl_seconds`` from ``ttl`` (seconds, ``None``: none)."""
    data = dict(memory.get("data") or {})
    ours = data.get(DATA_KEY) if isinstance(data.get(DATA_KEY), dict) else {}
    metadata = dict(ours.get("message_metadata") or {})
    kept = list(memory.get("messages") or [])
    for message, mid in zip(messages, ids):
        kept.append(message_to_ams(message, mid, now))
        if message.metadata:
            metadata[mid] = dict(message.metadata)
    kept = kept[-size:]
    live = {str(m.get("id")) for m in kept}
    data[DATA_KEY] = {"message_metadata": {k: v for k, v in metadata.items() if k in live}}
    return {
        "messages": kept,
        "memories": list(memory.get("memories") or []),
        "data": data,
        "context": memory.get("context"),
        "ttl_seconds": None if ttl is None else max(1, int(ttl)),
    }
