"""Conversions between the canonical record model and the Agent Memory Server's (AMS 0.15.2) wire
format, and the search requests built from a seam filter. Pure functions, no I/O. How values
are encoded (ids, TAG values, the carrier): :mod:`~primitives.memory.ams_backend.codec`.

What AMS long-term records lack, and where the backend keeps it:

- Identity: AMS has one id per record; the seam's ``(namespace, id)`` is written into it
  injectively (:func:`~primitives.memory.ams_backend.codec.ams_id`), and the namespace also
  goes into AMS's ``namespace`` field (for server-side filtering).
- Exact timestamps: AMS stores ``created_at``/``updated_at`` as float seconds, but reads them
  back through RediSearch, which returns NUMERIC fields with 12 significant digits (10 ms today,
  1 s in the year 9999). The exact microseconds travel in the carrier; AMS's own value wins when
  the two differ by more than that rounding allows (20 ms at least: another client edited the
  record, e.g. ``PATCH``, which keeps the carrier).
- Searchable context: AMS indexes and embeds only ``text``, so its ``text`` is the record's
  text with the speaker, the previous turn (``metadata["context"]``) and the written-out date
  (``codec.contextual_text``), the words the other backends index beside the text.
- ``metadata``, a ``ttl``, the ``skill`` memory type and the exact text, when AMS gets another
  one (the contextual text, or ``codec.ams_text``: blank, or with characters RediSearch would
  not split words at), travel in the carrier. A record written before the contextual text
  (no ``i`` in its carrier) reads back as it was written.
- Memory types: ``working`` <-> ``message``, ``episodic`` <-> ``episodic``, ``semantic`` <->
  ``semantic``, ``skill`` -> ``semantic`` plus the carrier (so a ``semantic`` search filter on
  the server is narrowed again here).
- A record's own ``embedding`` is not stored: AMS embeds ``text`` itself with its configured
  model.
- ``entities`` holds ``mp-id:<AMS id>`` (:data:`ID_ENTITY`): the key for finding many records by
  id in one request.

**Whose records.** A record is this store's when its AMS id starts with the store's prefix and
:data:`~primitives.memory.ams_backend.codec.ID_MARK`, or it carries a carrier; another client's
record (neither) is not read at all. One of ours that does not decode exactly (carrier missing
or malformed, an id or TAG value not in the form written here, a namespace field that disagrees
with its id, a text or type AMS could not have stored from us) is *damaged*:
:func:`record_from_ams` raises :class:`~primitives.errors.CorruptRecordError` naming its AMS id.

Every string a user gave that reaches an AMS search is either a TAG filter value (sent through
``tag_out``, escaped by the server's RedisVL ``Tag`` filter, then checked again here for exact
equality, because RediSearch TAG matching is case-insensitive and the server drops some filters
when they match nothing) or query words made of letters and digits only (:func:`words_for`), so
no query syntax passes. Ids reach URL paths percent-encoded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from primitives.errors import CorruptRecordError, PrimitivesError
from primitives.memory.ams_backend.codec import (
    BLANK_PLACEHOLDER,
    CARRIER_PREFIX,
    ENCODED_MARK,
    ID_MARK,
    ams_id,
    ams_text,
    context_parts,
    contextual_text,
    corrupt,
    decode_carrier,
    encode_carrier,
    is_digest,
    parse_ams_id,
    tag_in,
    tag_out,
)
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.memory.redis_backend.query import query_words

__all__ = [
    "AMS_MODES",
    "BLANK_PLACEHOLDER",
    "CARRIER_PREFIX",
    "ENCODED_MARK",
    "ID_ENTITY",
    "LegacyRecordError",
    "ams_id",
    "expired",
    "hit_score",
    "lookup_payload",
    "matches",
    "parse_time",
    "record_from_ams",
    "record_to_ams",
    "search_payload",
    "server_filter",
    "tag_in",
    "tag_out",
    "unique",
    "within_server_filter",
    "words_for",
]

#: Each record carries ``ID_ENTITY + <AMS id>`` in ``entities``, so the stored versions of a batch
#: of ids are found with one search (``entities: {"any": [...]}``) instead of a request per id.
ID_ENTITY = "mp-id:"
#: Seam search modes -> AMS ``SearchRequest.search_mode`` values.
AMS_MODES: Mapping[str, str] = {"keyword": "keyword", "vector": "semantic", "hybrid": "hybrid"}

_TO_AMS_TYPE = {
    MemoryType.WORKING: "message",
    MemoryType.EPISODIC: "episodic",
    MemoryType.SEMANTIC: "semantic",
    MemoryType.SKILL: "semantic",
}
_FROM_AMS_TYPE = {"message": MemoryType.WORKING, "episodic": MemoryType.EPISODIC, "semantic": MemoryType.SEMANTIC}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SKEW = timedelta(milliseconds=20)


#: The latest timestamp AMS reads back: RediSearch returns 12 significant digits, and a time in
#: the last second of the year 9999 rounds up into the year 10000, which AMS cannot read (it
#: answers "now" instead). Later times are sent as this; the carrier keeps the exact one.
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def _iso(dt: datetime) -> str:
    return min(dt.astimezone(timezone.utc), _LATEST).isoformat()


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def record_to_ams(
    record: MemoryRecord, prefix: str = "", *, index_dates: bool = True, max_chars: int | None = None
) -> dict[str, Any]:
    """The AMS ``MemoryRecord`` JSON for ``record`` (timestamps must be set).

    AMS's ``text`` (what it indexes for keyword search and embeds for vector search) is the
    record's text with its speaker, previous turn and written-out date
    (:func:`~primitives.memory.ams_backend.codec.contextual_text`), passed through
    :func:`~primitives.memory.ams_backend.codec.ams_text`; the exact text and which parts were
    added travel in the carrier (``t``, ``i``), so it reads back unchanged.

    Args:
        record: What to store; ``created_at`` and ``updated_at`` are sent as given (AMS keeps
            client timestamps; stored as float seconds, exact to the microsecond in the carrier).
        prefix: The store's partition on a shared AMS: starts the AMS id and the namespace.
        index_dates: Add the written-out ``created_at`` date (as the other backends index it).
        max_chars: Longest AMS text in characters (the backend's ``max_text_chars``: AMS embeds
            the whole text); a record whose contextual text would be longer gets its bare text
            (``ams_text(text)``) instead. ``None``: no limit.

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
    text = ams_text(record.text)
    parts = context_parts(record.metadata, index_dates)
    if parts:
        full = contextual_text(record.text, record.metadata, record.created_at, parts)  # type: ignore[arg-type]
        indexed = ams_text(full)
        if max_chars is None or len(indexed) <= max_chars:
            text = indexed
            extra["i"] = parts
    if text != record.text:
        extra["t"] = record.text
    key = ams_id(record.namespace, record.id, prefix)
    tags = {"namespace": tag_out(record.namespace),
            "user_id": None if record.user_id is None else tag_out(record.user_id),
            "session_id": None if record.session_id is None else tag_out(record.session_id)}
    topics = [tag_out(t) for t in record.topics]
    if is_digest(key[len(prefix):]) or any(is_digest(t) for t in (*tags.values(), *topics) if t is not None):
        extra["k"] = {"namespace": record.namespace, "id": record.id, "user_id": record.user_id,
                      "session_id": record.session_id, "topics": list(record.topics)}
    out: dict[str, Any] = {
        "id": key,
        "text": text,
        "namespace": prefix + tags["namespace"],
        "memory_type": _TO_AMS_TYPE[record.memory_type],
        "created_at": _iso(record.created_at),  # type: ignore[arg-type]
        "updated_at": _iso(record.updated_at),  # type: ignore[arg-type]
        "last_accessed": _iso(record.updated_at),  # type: ignore[arg-type]
        "discrete_memory_extracted": "t",  # nothing for AMS's extraction to do on it
        "entities": [ID_ENTITY + key],
        "extracted_from": [encode_carrier(extra)],
    }
    for field in ("user_id", "session_id"):
        if tags[field] is not None:
            out[field] = tags[field]
    if topics:
        out["topics"] = topics
    return out


def _tolerance(seconds: float) -> timedelta:
    """How far AMS's NUMERIC timestamp may be from the exact one by rounding alone: 12
    significant digits (RediSearch), at least 20 ms."""
    magnitude = 10 ** (math.floor(math.log10(abs(seconds))) + 1 - 12) if seconds else 0.0
    return max(_SKEW, timedelta(seconds=magnitude))


def _exact(ams_value: Any, micros: int) -> datetime:
    """AMS's (rounded) timestamp, or the carrier's exact one when it agrees within rounding."""
    rounded = parse_time(ams_value)
    exact = _EPOCH + timedelta(microseconds=micros)
    return exact if abs(exact - rounded) <= _tolerance(micros / 1e6) else rounded


def parse_time(value: Any) -> datetime:
    """An aware datetime from an AMS timestamp (ISO 8601 string, ``Z`` accepted, POSIX seconds,
    or datetime); naive values are taken as UTC.

    Raises:
        ValueError: none of those (or out of range).
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp {value!r} is out of range ({exc})") from None
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"timestamp {value!r} is not ISO 8601")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _carrier(data: Mapping[str, Any]) -> str | None:
    values = data.get("extracted_from")
    if isinstance(values, list):
        for value in values:
            if isinstance(value, str) and value.startswith(CARRIER_PREFIX):
                return value
    return None


def _stored_tag(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} is a {type(value).__name__}")
    return value


def _identifiers(data: Mapping[str, Any], extra: Mapping[str, Any], key: str, prefix: str) -> dict[str, Any]:
    """The record's exact ``namespace``, ``id``, ``user_id``, ``session_id`` and ``topics``:
    from the carrier's ``k`` (checked against the id and TAGs written from it), else decoded
    from the id and the TAGs.

    Raises:
        ValueError: they do not decode, or disagree.
    """
    topics = data.get("topics") or []
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise ValueError("topics is not a list of str")
    k = extra.get("k")
    if k is None:
        identity = parse_ams_id(key, prefix)
        if identity is None:
            raise LegacyRecordError(
                f"the Agent Memory Server record {key!r} was written by an earlier version of this package "
                "(its id is not namespace-scoped); add it again, or delete it",
                key=key, reason=f"it carries this package's data but its id is not {prefix}mp.<namespace>.<id>")
        out: dict[str, Any] = {"namespace": identity[0], "id": identity[1], "topics": tuple(tag_in(t) for t in topics)}
        for field in ("user_id", "session_id"):
            value = _stored_tag(data, field)
            try:
                out[field] = None if value is None else tag_in(value)
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
        return out
    if ams_id(k["namespace"], k["id"], prefix) != key:
        raise ValueError("its id disagrees with the carrier's namespace and id")
    for field in ("user_id", "session_id"):
        if _stored_tag(data, field) != (None if k[field] is None else tag_out(k[field])):
            raise ValueError(f"its {field} field disagrees with the carrier's")
    if topics != [tag_out(t) for t in k["topics"]]:
        raise ValueError("its topics disagree with the carrier's")
    return {**k, "topics": tuple(k["topics"])}


class LegacyRecordError(CorruptRecordError):
    """A record this package wrote before ids were namespace-scoped (its id is ``prefix + id``):
    read as damaged (skipped by searches, refused by ``get``) until it is added again."""


def record_from_ams(data: Mapping[str, Any], prefix: str = "") -> MemoryRecord | None:
    """The canonical record for an AMS record JSON object; ``None`` when it is not this store's
    (outside the partition ``prefix``, or another client's: see the module docstring).

    Raises:
        CorruptRecordError: it is this store's but does not decode exactly (``key`` is its AMS
            id, ``reason`` says what is wrong).
    """
    key = data.get("id")
    if not isinstance(key, str) or not key.startswith(prefix):
        return None
    carrier = _carrier(data)
    rest = key[len(prefix):]
    if carrier is None and not rest.startswith(ID_MARK) and not is_digest(rest):
        return None  # another client's record
    try:
        if carrier is None:
            raise ValueError("no memory-primitives carrier in extracted_from")
        extra = decode_carrier(carrier)
        ids = _identifiers(data, extra, key, prefix)
        if data.get("namespace") != prefix + tag_out(ids["namespace"]):
            raise ValueError(f"its namespace field {str(data.get('namespace'))[:60]!r} disagrees with its id")
        ams_type = data.get("memory_type")
        if ams_type not in _FROM_AMS_TYPE:
            raise ValueError(f"memory_type {str(ams_type)[:40]!r} is not one this package writes")
        memory_type = MemoryType.SKILL if "memory_type" in extra else _FROM_AMS_TYPE[ams_type]
        if _TO_AMS_TYPE[memory_type] != ams_type:
            raise ValueError(f"memory_type {ams_type!r} disagrees with the carrier's {memory_type.value!r}")
        text = data.get("text")
        if not isinstance(text, str):
            raise ValueError(f"text is a {type(text).__name__}")
        if "i" in extra:  # decode_carrier has checked that "t" is there too
            created = _EPOCH + timedelta(microseconds=extra["c"])
            written = contextual_text(extra["t"], extra.get("metadata") or {}, created, extra["i"])
            if text != ams_text(written):
                raise ValueError("its text is not the one written for the carrier's text, speaker, context and date")
            text = extra["t"]
        elif "t" in extra:
            if text != ams_text(extra["t"]):
                raise ValueError("its text is not the one written for the carrier's text")
            text = extra["t"]
        elif ams_text(text) != text:
            raise ValueError("its text is one this package never sends as it is (blank, or with NUL)")
        return MemoryRecord(
            text=text,
            memory_type=memory_type,
            metadata=extra.get("metadata") or {},
            created_at=_exact(data.get("created_at"), extra["c"]),
            updated_at=_exact(data.get("updated_at"), extra["u"]),
            ttl=extra.get("ttl"),
            **ids,
        )
    except (ValueError, TypeError, OverflowError, PrimitivesError) as exc:
        if isinstance(exc, CorruptRecordError):
            raise
        raise corrupt(key, str(exc)) from None


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
    try:
        return record.updated_at + timedelta(seconds=ttl) <= now  # type: ignore[operator]
    except OverflowError:  # past the year 9999: not yet
        return False


def hit_score(data: Mapping[str, Any]) -> float:
    """The score of an AMS search result: its normalised ``score``, else ``1 - dist`` (a server
    that sends no score), else 0."""
    score = _number(data.get("score"))
    if math.isfinite(score):
        return score
    dist = _number(data.get("dist") or 0.0)
    return max(0.0, 1.0 - dist) if math.isfinite(dist) else 0.0


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tag_filter(values: Sequence[str], prefix: str = "") -> dict[str, Any]:
    out = [prefix + tag_out(v) for v in values]
    return {"eq": out[0]} if len(out) == 1 else {"any": out}


def server_filter(tag_filter: Mapping[str, Sequence[str]], prefix: str = "") -> dict[str, Any]:
    """AMS ``SearchRequest`` filter fields for a normalised seam filter
    (:func:`~primitives.memory.backend.normalize_filter`).

    ``user_id``, ``session_id``, ``namespace``: ``{"eq": v}`` or ``{"any": [...]}`` of
    ``tag_out`` values; ``topics``: ``{"any": [...]}``; ``memory_type``: the AMS types the asked
    types map to. With a ``prefix`` the namespaces are prefixed, and a filter without a
    namespace is limited to the partition with ``{"startswith": prefix}``. The server's matching
    is a superset of the seam's (case-insensitive tags, ``skill`` stored as ``semantic``):
    :func:`matches` narrows it.
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
    if "created_at" in tag_filter:
        out["created_at"] = _created_filter(tag_filter["created_at"])  # type: ignore[arg-type]
    return out


def _created_filter(time_range: tuple[int | None, int | None]) -> dict[str, Any]:
    """AMS ``CreatedAt`` for a ``TimeRange``, widened to whole seconds: AMS applies one
    operator (``between``, else ``gte``/``lte``) to ``int(t.timestamp())`` seconds, so the
    server returns a superset that :func:`matches` narrows to the exact microseconds."""
    start, end = time_range
    low = None if start is None else _iso(_EPOCH + timedelta(seconds=math.floor(start / 1_000_000)))
    high = None if end is None else _iso(_EPOCH + timedelta(seconds=math.ceil(end / 1_000_000)))
    if low is not None and high is not None:
        return {"between": [low, high]}
    return {"gte": low} if low is not None else {"lte": high}


def matches(record: MemoryRecord, tag_filter: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``record`` satisfies a normalised seam filter exactly (case-sensitive; topics:
    any of; the other fields: one of)."""
    for field, values in tag_filter.items():
        if field == "created_at":
            if not values.contains(record.created_at):  # type: ignore[attr-defined]  # a TimeRange
                return False
        elif field == "topics":
            if not any(t in values for t in record.topics):
                return False
        elif field == "memory_type":
            if record.memory_type.value not in values:
                return False
        elif getattr(record, field) not in values:
            return False
    return True


def within_server_filter(data: Mapping[str, Any], tag_filter: Mapping[str, Sequence[str]], prefix: str = "") -> bool:
    """Whether an AMS result satisfies :func:`server_filter` as the server applies it (TAGs
    compared case-insensitively). A page of results of which none does is what AMS answers
    when the filtered search found nothing and it re-ran the search without the filters (its
    "soft-filter fallback"): nothing further can match."""
    def folded(value: Any) -> str | None:
        return value.casefold() if isinstance(value, str) else None

    for field in ("user_id", "session_id", "namespace"):
        if field in tag_filter:
            wanted = {((prefix if field == "namespace" else "") + tag_out(v)).casefold() for v in tag_filter[field]}
            if folded(data.get(field)) not in wanted:
                return False
    if "namespace" not in tag_filter and prefix and not (folded(data.get("namespace")) or "").startswith(prefix):
        return False
    if "topics" in tag_filter:
        wanted = {tag_out(t).casefold() for t in tag_filter["topics"]}
        topics = data.get("topics")
        if not isinstance(topics, list) or not any(folded(t) in wanted for t in topics):
            return False
    if "memory_type" in tag_filter:
        if data.get("memory_type") not in {_TO_AMS_TYPE[MemoryType(t)] for t in tag_filter["memory_type"]}:
            return False
    if "created_at" in tag_filter:
        start, end = tag_filter["created_at"]  # type: ignore[misc]  # a TimeRange
        try:
            seconds = parse_time(data.get("created_at")).timestamp()
        except (ValueError, TypeError, OverflowError):
            return False
        if (start is not None and seconds < math.floor(start / 1_000_000) - 1
                or end is not None and seconds > math.ceil(end / 1_000_000) + 1):
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
    hybrid_alpha: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/long-term-memory/search``.

    Args:
        text: What to send as the query: for ``keyword``/``hybrid`` the words from
            :func:`words_for`; for ``vector`` the user's text (only embedded, never parsed);
            ``""`` for a filter-only listing.
        mode: A seam mode (``keyword``, ``vector``, ``hybrid``).
        limit: 1..100 (AMS's bound).
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


def words_for(query: str) -> str:
    """The query AMS keyword and hybrid searches get: the query's words (letters and digits,
    case-folded, stop words dropped, repeats dropped) joined by spaces; ``""`` when none."""
    return " ".join(query_words(query))


def unique(ids: Iterable[str]) -> list[str]:
    """``ids`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(ids))
