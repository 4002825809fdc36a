"""Building RediSearch queries from user input; every user-supplied string is made inert here.

Nothing a user typed reaches ``FT.SEARCH`` except through this module: query words
(:func:`query_terms`) go through :func:`escape`, filter values (namespace, user, session, memory type, topics) through
:func:`~primitives.memory.redis_backend.schema.encode_tag`, whose output is ``[0-9a-f]`` (or
``h`` + hex) and so needs no escaping and cannot be split, trimmed or read as syntax. The rendered
strings are tested exactly, including hostile input (``tests/test_redis_query.py``).

Query syntax: RediSearch dialect 2 (https://redis.io/docs/latest/develop/interact/search-and-query/
advanced-concepts/query_syntax/): a backslash makes the next character literal, in text terms and
in tag values alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from primitives.memory.analysis import ENGLISH_STOP_WORDS
from primitives.memory.redis_backend.schema import ANALYZER, TAG_FIELDS, encode_tag

__all__ = ["RANGE_FIELDS", "TEXT_FIELDS", "decimal_seconds", "escape", "query_terms", "query_words", "render_filter", "render_query"]

#: TEXT fields a query's terms are matched against: the terms of the text and of the indexed
#: metadata, and of the written-out date (the same text the in-process backend indexes).
TEXT_FIELDS: tuple[str, ...] = ("terms", "date")

# Runs of letters and digits (apostrophes split: "caroline's" is "caroline" and "s").
_WORD = re.compile(r"\w+")

# Everything that is not a letter or digit of any script (``\w`` less the underscore).
_SPECIAL = re.compile(r"[^\w]|_")


def escape(value: str) -> str:
    """``value`` with every character that is not a letter or digit preceded by a backslash.

    Letters and digits of any script pass unchanged; everything else (punctuation, whitespace,
    symbols, emoji, control characters) is made literal, so no input can open a field clause,
    a union, a negation, a prefix/wildcard or a KNN clause.
    """
    if value.isalnum():  # the common case: str.isalnum is exactly "no character _SPECIAL matches"
        return value
    return _SPECIAL.sub(r"\\\g<0>", value)


def query_terms(query: str) -> list[str]:
    """The distinct terms of ``query``, in order of appearance, as the in-process analyzer makes
    them (case-folded words, stop words dropped, Snowball-stemmed:
    :data:`~primitives.memory.redis_backend.schema.ANALYZER`): what the Redis backend indexes
    (:func:`~primitives.memory.redis_backend.codec.index_terms`) and searches for."""
    return list(dict.fromkeys(ANALYZER.terms(query)))


def query_words(query: str, stop_words: Iterable[str] = ENGLISH_STOP_WORDS) -> list[str]:
    """The distinct, case-folded runs of letters and digits (``\\w+``) of ``query`` minus stop
    words, in order of appearance (an apostrophe splits: ``"caroline's"`` is ``caroline``, ``s``);
    the Agent Memory Server backend sends these. The Redis backend uses :func:`query_terms`."""
    stop = stop_words if isinstance(stop_words, (set, frozenset)) else frozenset(stop_words)
    words = [w for w in _WORD.findall(query.casefold()) if w not in stop]
    return list(dict.fromkeys(words))


def render_filter(tag_filter: Mapping[str, Sequence[str]]) -> str:
    """``@tag_field:{e1 | e2}`` clauses, one per field, space-joined (RediSearch's AND), where
    ``e1`` is :func:`~primitives.memory.redis_backend.schema.encode_tag` of a value: equality is
    exact whatever the value contains.

    Example: ``render_filter({"user_id": ("alice",)})`` is ``"@tag_user_id:{616c696365}"``.

    Args:
        tag_filter: As returned by ``normalize_filter``: a field of
            :data:`~primitives.memory.backend.FILTER_FIELDS` to a non-empty tuple of values, and
            ``created_at`` to a :class:`~primitives.memory.temporal.TimeRange`, rendered as a
            NUMERIC range ``@created_at:[1683504000.000000 (1683590400.000000]`` (numbers only:
            nothing a user typed).
    """
    return " ".join(
        _render_range(field, values) if field in RANGE_FIELDS else
        "@%s:{%s}" % (TAG_FIELDS[field], " | ".join([encode_tag(v) for v in values]))
        for field, values in tag_filter.items()
    )


#: Filter fields that are ranges over a NUMERIC field of the same name (a ``TimeRange``).
RANGE_FIELDS = frozenset({"created_at"})


def decimal_seconds(us: int) -> str:
    """Microseconds since the epoch as decimal seconds with 6 decimals, the form the NUMERIC
    timestamps are stored in (:func:`~primitives.memory.redis_backend.codec.seconds`): a bound
    and a stored time that are equal parse to the same double, and distinct microseconds stay
    distinct and ordered while ``|seconds| < 2**32`` (years 1834..2106; further out a double's
    spacing exceeds 1 µs and bounds are exact to that spacing)."""
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(us), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def _render_range(field: str, time_range: object) -> str:
    """``@created_at:[start (end]``: ``start <= t < end`` (``-inf``/``+inf`` when unbounded)."""
    start, end = time_range  # type: ignore[misc]  # a TimeRange: (start_us, end_us)
    low = "-inf" if start is None else decimal_seconds(start)
    high = "+inf" if end is None else "(" + decimal_seconds(end)
    return "@%s:[%s %s]" % (field, low, high)


def render_query(words: Sequence[str], tag_filter: Mapping[str, Sequence[str]]) -> str:
    """A full query: any of ``words`` in the text fields, restricted by ``tag_filter``.

    Words are OR-ed (ranking, not matching, decides the order, as in BM25 over a bag of words).
    With a filter, the filter is repeated inside each word's clause,
    ``(filter @fields:(w1)) | (filter @fields:(w2))``, rather than intersected once with the union
    of words: in an intersection, RediSearch's union iterator stops at the first word that matches
    a document, so a document matching several words was scored for one (measured on LoCoMo:
    recall@10 0.649 with the single intersection; see docs/redis-backend.md). With no words the
    query matches every document the filter allows (``*`` alone when there is no filter either).
    """
    if not words:
        return render_filter(tag_filter) if tag_filter else "*"
    if not tag_filter:
        return "%s(%s)" % (_IN_TEXT, " | ".join([escape(w) for w in words]))
    clause = "(%s %s(" % (render_filter(tag_filter), _IN_TEXT)
    return " | ".join([clause + escape(w) + "))" for w in words])


# ``@terms|date:``: the TEXT_FIELDS clause prefix
_IN_TEXT = "@%s:" % "|".join(TEXT_FIELDS)
