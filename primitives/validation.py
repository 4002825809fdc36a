"""Checks of values that cross a public edge, in one place for every layer.

Each public method validates its arguments once, with these functions, before any backend or
store sees them (``MemoryBackend``'s public methods, ``MemoryRecord``, the store primitives), so
every backend refuses the same input with the same typed error, and what is accepted is stored
and read back exactly. Each check returns the value in its normal form (``ttl`` as a ``float``,
datetimes in UTC, metadata as a plain JSON-shaped copy, vectors rounded to float32).

Errors: a wrong type raises the ``TypeError`` flavour of the caller's error family, a wrong value
its ``ValueError`` flavour; both derive from :class:`~primitives.errors.PrimitivesError`. The
family is chosen with ``errors=``: :data:`INPUT` (arguments) or :data:`RECORD` (fields of a
record or message).
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from primitives.errors import (
    InvalidInputError,
    InvalidInputTypeError,
    InvalidRecordError,
    InvalidRecordTypeError,
)

__all__ = [
    "INPUT",
    "RECORD",
    "MAX_IDENTIFIER_CHARS",
    "MAX_COUNT",
    "MAX_LIMIT",
    "MAX_METADATA_DEPTH",
    "MAX_TOPICS",
    "MAX_TTL",
    "check_aware_datetime",
    "check_bool",
    "check_identifier",
    "check_int",
    "check_items",
    "check_json_object",
    "check_limit",
    "check_number",
    "check_text",
    "check_ttl",
    "check_vector",
]

#: Error families: ``(value error, type error)``.
INPUT: Final = (InvalidInputError, InvalidInputTypeError)
RECORD: Final = (InvalidRecordError, InvalidRecordTypeError)

#: The longest accepted ``ttl``, in seconds (10**12 s, about 31,700 years; ``math.inf`` means no
#: expiry): Redis keeps expiry as signed 64-bit milliseconds since the epoch, so a larger value
#: would be refused by the server after the record was written.
MAX_TTL: Final = 10**12
#: The largest ``limit`` a search or a read accepts (every backend returns at most this many).
MAX_LIMIT: Final = 10_000
#: The largest count a store primitive sends to a Redis Lua script (a session's ``max_messages``,
#: a rate ``limit``): 2**53 - 1, up to which a Lua number (a double) holds every integer exactly.
#: Beyond it the twins would drift: Python counts exactly, and Redis refuses a number a script
#: passes back to a command ("value is not an integer or out of range", from about 10**17).
MAX_COUNT: Final = 2**53 - 1
#: The longest identifier (id, user_id, session_id, namespace, topic, role, skill name), in
#: characters.
MAX_IDENTIFIER_CHARS: Final = 1_024
#: Topics a record may carry.
MAX_TOPICS: Final = 256
#: Deepest nesting of lists and objects inside ``metadata`` (the top-level object is depth 1).
MAX_METADATA_DEPTH: Final = 32

_FLOAT32 = struct.Struct("<f")
_SCALARS = (str, int, float, bool, type(None))


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _utf8(value: str) -> bool:
    """Whether ``value`` can be encoded as UTF-8 (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(
    value: object, name: str, *, allow_empty: bool = True, errors: tuple[type, type] = INPUT
) -> str:
    """``value`` when it is a ``str`` that UTF-8 can encode (any length; empty unless
    ``allow_empty=False``). Every character is kept: whitespace, separators, NUL, emoji. This is
    the rule for a store key part (a key-value namespace, entity or id, a session id, a rate-limit
    key): Redis keys are binary-safe, so only text that cannot be encoded is refused.

    Raises:
        The family's type error for a non-``str``; its value error for a string with lone
        surrogates (``"\\ud800"``), which no store can write as UTF-8, or an empty string when
        ``allow_empty`` is false.
    """
    if type(value) is not str:
        if not isinstance(value, str):
            raise errors[1](f"{name} must be a str, got {type(value).__name__}")
        value = str.__str__(value)  # a str subclass (a StrEnum...): stored as the plain string
    if not value and not allow_empty:
        raise errors[0](f"{name} must be a non-empty str")
    if not _utf8(value):
        raise errors[0](f"{name} must be valid Unicode text (no lone surrogates), got {_describe(value)}")
    return value


def check_identifier(value: object, name: str, *, errors: tuple[type, type] = INPUT) -> str:
    """``value`` when it is an identifier: a ``str`` of 1 to :data:`MAX_IDENTIFIER_CHARS`
    characters, not only whitespace, that UTF-8 can encode. Any other character is accepted
    (separators, whitespace around it, control characters, NUL, query syntax) and kept exactly:
    ``"alice "`` and ``"alice"`` are two identifiers.

    Raises:
        The family's type error for a non-``str``; its value error otherwise.
    """
    value = check_text(value, name, errors=errors)
    if not value.strip():
        raise errors[0](f"{name} must be a non-empty string with a non-whitespace character, got {value!r}")
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise errors[0](f"{name} must be at most {MAX_IDENTIFIER_CHARS} characters, got {len(value)}")
    return value


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = 1,
    maximum: int | None = None,
    errors: tuple[type, type] = INPUT,
) -> int:
    """``value`` when it is an ``int`` (not a ``bool``) within ``[minimum, maximum]``.

    Raises:
        The family's type error for a non-``int``; its value error out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors[1](f"{name} must be an int, got {type(value).__name__} {_describe(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f">= {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        raise errors[0](f"{name} must be an int {' and '.join(p for p in (low, high) if p)}, got {value!r}")
    return int(value)


def check_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    errors: tuple[type, type] = INPUT,
) -> float:
    """``value`` as a finite ``float`` within ``[minimum, maximum]`` (``(minimum, maximum]`` with
    ``exclusive_minimum``).

    Raises:
        The family's type error for a non-number (a ``bool`` included); its value error for NaN,
        an infinity or a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors[1](f"{name} must be a number, got {type(value).__name__} {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        raise errors[0](f"{name} is out of range: {_describe(value)}") from None
    too_low = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    if not math.isfinite(number) or too_low or (maximum is not None and number > maximum):
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        accepted = f"a finite number {' and '.join(bounds)}" if bounds else "a finite number"
        raise errors[0](f"{name} must be {accepted}, got {_describe(value)}")
    return number


def check_bool(value: object, name: str, *, errors: tuple[type, type] = INPUT) -> bool:
    """``value`` when it is a ``bool``; else the family's type error."""
    if not isinstance(value, bool):
        raise errors[1](f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_ttl(
    value: object,
    name: str = "ttl",
    *,
    optional: bool = True,
    infinite: bool = True,
    errors: tuple[type, type] = INPUT,
) -> float | None:
    """A lifetime in seconds: ``None`` (when ``optional``: the default applies), a number in
    ``(0, MAX_TTL]``, or ``math.inf`` (never expires; only when ``infinite``: the store
    primitives, whose ``None`` already means no expiry, refuse it). Returned as a ``float``.

    Raises:
        The family's type error for a non-number (``None`` when not ``optional``, a ``bool``);
        its value error for ``<= 0``, NaN, ``math.inf`` when not ``infinite``, or a value above
        :data:`MAX_TTL` (a huge ``int`` included), before anything is written.
    """
    if value is None:
        if optional:
            return None
        raise errors[1](f"{name} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        accepted = "a number of seconds or None" if optional else "a number of seconds"
        raise errors[1](f"{name} must be {accepted}, got {type(value).__name__} {_describe(value)}")
    if value == math.inf and infinite:
        return math.inf
    if not 0 < value <= MAX_TTL:  # also false for NaN and -inf
        never = " or math.inf (never expires)" if infinite else ""
        raise errors[0](f"{name} must be seconds in (0, {MAX_TTL}]{never}, got {_describe(value)}")
    return float(value)


def check_limit(value: object, name: str = "limit") -> int:
    """``value`` when it is an ``int`` in ``[1, MAX_LIMIT]``.

    Raises:
        InvalidInputError: out of range (an ``InvalidInputTypeError``, also a ``TypeError``, for
            a non-``int``).
    """
    return check_int(value, name, minimum=1, maximum=MAX_LIMIT)


def check_items(value: object, name: str, *, errors: tuple[type, type] = INPUT) -> Sequence[Any]:
    """``value`` when it is a list or tuple (a batch of items); a ``str``, ``bytes``, mapping,
    set, generator or ``None`` is refused, because its items or their order would be guessed.

    Raises:
        The family's type error.
    """
    if type(value) is list or type(value) is tuple:
        return value  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return value
    raise errors[1](
        f"{name} must be a list or tuple, got {type(value).__name__}"
        + (" (wrap a single item in a list)" if isinstance(value, (str, bytes)) or value is not None else "")
    )


def check_aware_datetime(value: object, name: str, *, errors: tuple[type, type] = INPUT) -> datetime:
    """``value`` in UTC when it is a timezone-aware ``datetime``.

    Raises:
        The family's type error for anything else (a naive datetime included).
    """
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise errors[1](f"{name} must be a timezone-aware datetime, got {_describe(value)}")
    if value.tzinfo is timezone.utc and type(value) is datetime:
        return value
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        raise errors[0](f"{name} is out of range once converted to UTC: {_describe(value)}") from None
    if type(utc) is not datetime:  # a subclass (pandas' Timestamp...): kept as a plain datetime
        utc = datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                       tzinfo=timezone.utc)
    return utc


def check_vector(value: object, name: str = "embedding", *, errors: tuple[type, type] = RECORD) -> tuple[float, ...]:
    """``value`` as a tuple of floats rounded to float32 (what every backend stores, so it reads
    back exactly): a non-empty sequence of finite real numbers (``int``, ``float``, numpy
    scalars; ``bool`` counts as 0/1) within the float32 range.

    Raises:
        The family's type error for a non-sequence or a non-number item; its value error for an
        empty vector, NaN, an infinity, or a value beyond float32.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        raise errors[1](f"{name} must be a sequence of floats or None, got {type(value).__name__}")
    items = value if type(value) is tuple else tuple(value)  # type: ignore[arg-type]
    n = len(items)
    if not n:
        raise errors[0](f"{name} must have at least one value")
    try:
        out = struct.unpack(f"<{n}f", struct.pack(f"<{n}f", *items))
    except (OverflowError, struct.error, TypeError, ValueError):
        pass  # find the culprit below, one value at a time
    else:
        # a sum of float32-range values is finite unless one of them is NaN or infinite
        if math.isfinite(sum(out)):
            return out
    pack, unpack = _FLOAT32.pack, _FLOAT32.unpack
    result = []
    for i, x in enumerate(items):
        if not isinstance(x, numbers.Real):
            raise errors[1](f"{name}[{i}] must be a number, got {type(x).__name__} {_describe(x)}")
        try:
            f = unpack(pack(float(x)))[0]
        except (OverflowError, struct.error):
            raise errors[0](f"{name}[{i}] is beyond the float32 range: {_describe(x)}") from None
        if not math.isfinite(f):
            raise errors[0](f"{name}[{i}] must be finite, got {_describe(x)}")
        result.append(f)
    return tuple(result)


def check_json_object(value: object, name: str = "metadata", *, errors: tuple[type, type] = RECORD) -> dict[str, Any]:
    """A plain copy of ``value`` when it is a JSON object: a mapping with ``str`` keys whose
    values are ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists or tuples (copied as
    lists) and mappings of the same, nested at most :data:`MAX_METADATA_DEPTH` deep. Strings and
    keys must be valid Unicode. This is what every backend stores and reads back exactly.

    Raises:
        The family's type error naming the path of the first value that is not JSON (a set, a
        ``datetime``, ``bytes``, an object, a non-``str`` key); its value error for NaN or an
        infinity, a lone surrogate, or nesting deeper than the limit (a cycle included).
    """
    if not isinstance(value, Mapping):
        raise errors[1](f"{name} must be a JSON object (a dict with str keys), got {type(value).__name__}")
    return _copy_json(value, name, 1, errors)  # type: ignore[return-value]


def _copy_json(value: Any, path: str, depth: int, errors: tuple[type, type]) -> Any:
    if depth > MAX_METADATA_DEPTH:
        shown = path if len(path) <= 100 else path[:60] + "..." + path[-30:]
        raise errors[0](f"{shown} nests deeper than {MAX_METADATA_DEPTH} levels (or refers to itself)")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise errors[1](
                    f"{path} has a key of type {type(key).__name__} ({_describe(key)}); JSON object keys are str"
                )
            if not _utf8(key):
                raise errors[0](f"{path} has a key that is not valid Unicode: {_describe(key)}")
            t = type(item)
            if t is str:
                if not _utf8(item):
                    raise errors[0](f"{path}[{key!r}] is not valid Unicode text: {_describe(item)}")
                out[key] = item
            elif t is int or t is bool or item is None:
                out[key] = item
            elif t is float:
                if not math.isfinite(item):
                    raise errors[0](f"{path}[{key!r}] must be finite, got {item!r} (JSON has no NaN or infinity)")
                out[key] = item
            else:
                out[key] = _copy_json(item, f"{path}[{key!r}]", depth + 1, errors)
        return out
    if isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            t = type(item)
            if t is str:
                if not _utf8(item):
                    raise errors[0](f"{path}[{i}] is not valid Unicode text: {_describe(item)}")
                items.append(item)
            elif t is int or t is bool or item is None:
                items.append(item)
            elif t is float:
                if not math.isfinite(item):
                    raise errors[0](f"{path}[{i}] must be finite, got {item!r} (JSON has no NaN or infinity)")
                items.append(item)
            else:
                items.append(_copy_json(item, f"{path}[{i}]", depth + 1, errors))
        return items
    if isinstance(value, _SCALARS):  # a subclass of a JSON scalar (an IntEnum, a str subclass)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise errors[0](f"{path} must be finite, got {value!r}")
            return float(value)
        text = str.__str__(value)
        if not _utf8(text):
            raise errors[0](f"{path} is not valid Unicode text: {_describe(text)}")
        return text
    raise errors[1](
        f"{path} is a {type(value).__name__} ({_describe(value)}), which JSON cannot hold; accepted: "
        "None, bool, int, float, str, lists and dicts of them"
    )
