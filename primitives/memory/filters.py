"""Search arguments checked at the public edge: the filter (exact tag values and a ``created_at``
range), the query text and the search mode. :class:`~primitives.memory.backend.MemoryBackend`
calls these once per search, so every backend's hook sees the same normalised values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from primitives.errors import InvalidFilterError, InvalidInputError
from primitives.memory.record import MemoryType
from primitives.memory.temporal import check_time_range
from primitives.validation import check_identifier, check_text

__all__ = [
    "FILTER_FIELDS",
    "MAX_FILTER_VALUES",
    "RANGE_FIELDS",
    "SEARCH_MODES",
    "check_mode",
    "check_query",
    "normalize_filter",
]

#: Fields a search filter may name. Each takes a string or a sequence of strings ("any of").
FILTER_FIELDS: frozenset[str] = frozenset({"user_id", "session_id", "namespace", "memory_type", "topics"})
#: Fields a search filter may give a range for: ``created_at`` (see :func:`normalize_filter`).
RANGE_FIELDS: frozenset[str] = frozenset({"created_at"})
#: Most values one filter field may list.
MAX_FILTER_VALUES = 1_000
#: Values of ``search(..., mode=)``: BM25 keyword ranking, embedding (cosine) ranking, or both
#: fused (:func:`~primitives.memory.embedding.fuse`).
SEARCH_MODES: tuple[str, ...] = ("keyword", "vector", "hybrid")

_MEMORY_TYPES = frozenset(t.value for t in MemoryType)
_FILTER = (InvalidFilterError, InvalidFilterError)


def normalize_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a search filter and return it as ``{field: (value, ...)}``, plus
    ``"created_at": TimeRange`` when a time range is given.

    Each value is matched exactly (case, whitespace, separators and every other character
    count) against the stored field; a list matches any of its values (``topics``: a record
    matches when it has any of them). ``None`` values are dropped (no restriction on that
    field). A ``MemoryType`` is taken by its value. ``created_at`` takes a range,
    ``{"gte"|"gt": aware datetime, "lte"|"lt": aware datetime}`` (one bound or both), normalised
    to a :class:`~primitives.memory.temporal.TimeRange` (exact microseconds, half-open); a
    backend matches it with :func:`~primitives.memory.temporal.split_filter`.

    Raises:
        InvalidFilterError: ``filter`` is not a mapping, names a field outside
            :data:`FILTER_FIELDS` and :data:`RANGE_FIELDS`, gives a value that is not an
            identifier (a non-empty ``str``, see :func:`~primitives.validation.check_identifier`)
            or a non-empty list or tuple of at most :data:`MAX_FILTER_VALUES` of them, a
            ``memory_type`` that is not a :class:`MemoryType` value, or a ``created_at`` range
            that :func:`~primitives.memory.temporal.check_time_range` refuses (a naive datetime,
            an unknown operator, a reversed or empty range, a non-datetime bound such as NaN).
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"filter must be a mapping, got {type(filter).__name__}")
    out: dict[str, Any] = {}
    for key, value in filter.items():
        if key in RANGE_FIELDS:
            time_range = check_time_range(value)
            if time_range is not None:
                out[key] = time_range
            continue
        if key not in FILTER_FIELDS:
            raise InvalidFilterError(
                f"unknown filter field {key!r}; accepted: {', '.join(sorted(FILTER_FIELDS | RANGE_FIELDS))}"
            )
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = (check_identifier(value, f"filter {key!r}", errors=_FILTER),)
            continue
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise InvalidFilterError(
                f"filter {key!r} takes a str or a list of str, got {type(value).__name__}"
            )
        if not value or len(value) > MAX_FILTER_VALUES:
            raise InvalidFilterError(
                f"filter {key!r} takes a str or a list of 1 to {MAX_FILTER_VALUES} of them, got {len(value)} values"
            )
        values = tuple(check_identifier(v, f"filter {key!r}", errors=_FILTER) for v in value)
        out[key] = tuple(dict.fromkeys(sorted(values) if isinstance(value, (set, frozenset)) else values))
    unknown = [v for v in out.get("memory_type", ()) if v not in _MEMORY_TYPES]
    if unknown:
        raise InvalidFilterError(
            f"filter 'memory_type' got {unknown[0]!r}; accepted: {', '.join(sorted(_MEMORY_TYPES))}"
        )
    return out


def check_query(query: object) -> str:
    """Return ``query`` if it is valid Unicode text.

    Raises:
        InvalidInputError: (an ``InvalidInputTypeError``, also a ``TypeError``, for a non-``str``).
    """
    return check_text(query, "query")


def check_mode(mode: object) -> str | None:
    """Return ``mode`` if it is ``None`` (the backend's default) or one of :data:`SEARCH_MODES`.

    Raises:
        InvalidInputError: otherwise.
    """
    if mode is None or (isinstance(mode, str) and mode in SEARCH_MODES):
        return mode
    raise InvalidInputError(f"mode must be one of {', '.join(SEARCH_MODES)} (or None), got {mode!r}")
