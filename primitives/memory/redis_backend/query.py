"""Building RediSearch queries from user input, with every user-supplied string escaped here.

Nothing a user typed reaches ``FT.SEARCH`` except through :func:`escape`: query words, tag values
(user, session, namespace, memory type, topics). The rendered strings are tested exactly,
including hostile input (``tests/test_redis_query.py``).

Query syntax: RediSearch dialect 2 (https://redis.io/docs/latest/develop/interact/search-and-query/
advanced-concepts/query_syntax/): a backslash makes the next character literal, in text terms and
in tag values alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from primitives.memory.analysis import ENGLISH_STOP_WORDS

__all__ = ["TEXT_FIELDS", "escape", "query_words", "render_filter", "render_query"]

#: TEXT fields a query's words are matched against: the same text the in-process backend indexes.
TEXT_FIELDS: tuple[str, ...] = ("text", "speaker", "context", "date")

# The words of a query as RediSearch's own tokenizer would split them: it separates on
# punctuation (apostrophes included) and whitespace, so "caroline's" is "caroline" and "s".
_WORD = re.compile(r"\w+")

# Everything that is not a letter or digit of any script (``\w`` less the underscore).
_SPECIAL = re.compile(r"[^\w]|_")


def escape(value: str) -> str:
    """``value`` with every character that is not a letter or digit preceded by a backslash.

    Letters and digits of any script pass unchanged; everything else (punctuation, whitespace,
    symbols, emoji, control characters) is made literal, so no input can open a field clause,
    a union, a negation, a prefix/wildcard or a KNN clause.
    """
    return _SPECIAL.sub(r"\\\g<0>", value)


def query_words(query: str, stop_words: Iterable[str] = ENGLISH_STOP_WORDS) -> list[str]:
    """The distinct, case-folded words of ``query`` minus stop words, in order of appearance."""
    stop = stop_words if isinstance(stop_words, (set, frozenset)) else frozenset(stop_words)
    words = [w for w in _WORD.findall(query.casefold()) if w not in stop]
    return list(dict.fromkeys(words))


def render_filter(tag_filter: Mapping[str, Sequence[str]]) -> str:
    """``@field:{v1 | v2}`` clauses, one per field, space-joined (RediSearch's AND).

    Args:
        tag_filter: As returned by ``normalize_filter``: field to non-empty tuple of values.
    """
    return " ".join(
        "@%s:{%s}" % (field, " | ".join(escape(v) for v in values))
        for field, values in tag_filter.items()
    )


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
    fields = "@%s:" % "|".join(TEXT_FIELDS)
    if not words:
        return render_filter(tag_filter) if tag_filter else "*"
    if not tag_filter:
        return "%s(%s)" % (fields, " | ".join(escape(w) for w in words))
    clause = render_filter(tag_filter)
    return " | ".join("(%s %s(%s))" % (clause, fields, escape(w)) for w in words)
