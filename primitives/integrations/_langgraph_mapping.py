"""What :mod:`primitives.integrations.langgraph` stores and matches, without LangGraph itself:
the injective text form of namespaces and keys (record ids and topics), LangGraph's filter rules,
value text for indexing, namespace match conditions, and the ``created_at`` windows a listing is
split into when a page comes back full."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from primitives.errors import InvalidFilterError, PrimitivesError

__all__ = ["ListingLimitError", "item_id", "topic", "check_filter", "matches", "leaves", "path_matches", "split_window"]

#: Longest readable encoding kept in an id or topic; longer ones are hashed.
_READABLE = 1_000
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_MICROSECOND = timedelta(microseconds=1)


class ListingLimitError(PrimitivesError, RuntimeError):
    """A listing met more items with one ``created_at`` (to the microsecond) than one search page
    (10,000) holds, so it cannot page through them; only records imported with equal timestamps
    can do this."""


def encode(parts: list[Any]) -> str:
    """The injective text form of ``parts`` (a namespace prefix as a list, or ``[namespace, key]``):
    ``"lg"`` and its compact JSON (``lg["users","alice"]``), or ``"lg#"`` and the SHA-256 hex of that
    JSON when it is longer than 1,000 characters (an identifier holds at most 1,024)."""
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= _READABLE:
        return "lg" + text
    return "lg#" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_id(namespace: tuple[str, ...], key: str) -> str:
    """The record id of the item ``(namespace, key)``."""
    return encode([list(namespace), key])


def topic(prefix: tuple[str, ...]) -> str:
    """The topic every item under ``prefix`` carries (``()``: every item of the store)."""
    return encode(list(prefix))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_filter(filter: object, path: str = "filter") -> None:
    """Refuse a filter LangGraph's stores would not run: not a mapping of str keys, an unknown
    ``$`` operator, a mix of operators and fields, or a comparison with a non-number."""
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"{path} must be a mapping of value keys to values, got {type(filter).__name__}")
    operators = [k for k in filter if isinstance(k, str) and k.startswith("$")]
    for key, expected in filter.items():
        if not isinstance(key, str):
            raise InvalidFilterError(f"{path} has a key of type {type(key).__name__}; keys are str")
        if operators:
            if key not in _OPERATORS:
                raise InvalidFilterError(f"{path} got {key!r}; accepted operators: {', '.join(sorted(_OPERATORS))}")
            if key not in ("$eq", "$ne") and (not _number(expected) or not math.isfinite(expected)):
                raise InvalidFilterError(f"{path}[{key!r}] compares with a finite number, got {expected!r}")
        elif isinstance(expected, Mapping):
            check_filter(expected, f"{path}[{key!r}]")


def matches(value: Any, expected: Any) -> bool:
    """Whether a stored value matches a filter value (LangGraph's JSONB-like rules)."""
    if isinstance(expected, Mapping):
        if any(k.startswith("$") for k in expected):
            return all(_apply(value, op, operand) for op, operand in expected.items())
        return isinstance(value, dict) and all(matches(value.get(k), v) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(matches(v, e) for v, e in zip(value, expected))
        )
    return bool(value == expected)


def _apply(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(value == operand)
    if op == "$ne":
        return bool(value != operand)
    if not _number(value):
        return False
    if op == "$gt":
        return value > operand
    if op == "$gte":
        return value >= operand
    if op == "$lt":
        return value < operand
    return value <= operand  # $lte


def leaves(value: Any) -> Iterable[str]:
    """Every string and number (not bool) of a JSON value, in order, as text (the ``"$"`` path)."""
    if isinstance(value, str):
        yield value
    elif _number(value):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)


def path_matches(namespace: tuple[str, ...], path: tuple[str, ...], suffix: bool) -> bool:
    """Whether ``namespace`` starts (ends, with ``suffix``) with ``path``; ``"*"`` matches any label."""
    if len(namespace) < len(path):
        return False
    pairs = zip(reversed(namespace), reversed(path)) if suffix else zip(namespace, path)
    return all(p == "*" or n == p for n, p in pairs)


def split_window(
    low: datetime | None, high: datetime | None, times: Sequence[datetime | None]
) -> list[tuple[datetime | None, datetime | None]]:
    """Windows that together cover ``[low, high)`` (``None``: unbounded), found full: the part
    below the page's earliest ``created_at``, the page's span in two halves, the part above.

    Raises:
        ListingLimitError: a page's records were all created in one microsecond (they cannot
            be listed apart).
    """
    stamps = [t for t in times if t is not None]
    first, last = min(stamps), max(stamps) + _MICROSECOND
    windows: list[tuple[datetime | None, datetime | None]] = []
    if low is None or low < first:
        windows.append((low, first))
    if last - first > _MICROSECOND:
        middle = first + (last - first) // 2
        windows += [(first, middle), (middle, last)]
    elif (low, high) == (first, last):
        raise ListingLimitError(
            f"more than {len(stamps)} items have created_at {first.isoformat()}: a listing cannot page through "
            "them (items this store writes get the time of their first put)"
        )
    else:
        windows.append((first, last))
    if high is None or last < high:
        windows.append((last, high))
    return windows
