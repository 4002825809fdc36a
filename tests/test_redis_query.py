"""Rendered RediSearch queries, compared as exact strings, hostile input included."""

from __future__ import annotations

import pytest

from primitives.memory.redis_query import escape, query_words, render_filter, render_query

TEXT = "@text|speaker|context|date:"


def test_plain_question() -> None:
    words = query_words("What did Caroline's friend paint?")
    assert words == ["caroline", "friend", "paint"]
    assert render_query(words, {}) == TEXT + "(caroline | friend | paint)"


def test_filter_and_words() -> None:
    q = render_query(["blue", "sky"], {"user_id": ("alice",), "namespace": ("ns-1",)})
    f = "@user_id:{alice} @namespace:{ns\\-1} "
    assert q == f"({f}{TEXT}(blue)) | ({f}{TEXT}(sky))"  # the filter is inside every alternative


def test_any_of_values_and_no_words() -> None:
    assert render_filter({"topics": ("a b", "c|d")}) == "@topics:{a\\ b | c\\|d}"
    assert render_query([], {"memory_type": ("semantic", "episodic")}) == "@memory_type:{semantic | episodic}"
    assert render_query([], {}) == "*"


@pytest.mark.parametrize(
    ("hostile", "escaped"),
    [
        ("*", "\\*"),
        ("@user_id:{x}", "\\@user\\_id\\:\\{x\\}"),
        ("a|b", "a\\|b"),
        ("-alice", "\\-alice"),
        ("{}", "\\{\\}"),
        ("()", "\\(\\)"),
        ('"quoted"', '\\"quoted\\"'),
        ("back\\slash", "back\\\\slash"),
        ("=>[KNN 5 @v $b]", "\\=\\>\\[KNN\\ 5\\ \\@v\\ \\$b\\]"),
        ("ünï 😀", "ünï\\ \\😀"),
        ("tab\there", "tab\\\there"),
        ("%fuzzy%", "\\%fuzzy\\%"),
        ("under_score", "under\\_score"),
    ],
)
def test_hostile_values_are_escaped_exactly(hostile: str, escaped: str) -> None:
    assert escape(hostile) == escaped
    assert render_filter({"user_id": (hostile,)}) == "@user_id:{%s}" % escaped


def test_hostile_query_text_becomes_plain_words() -> None:
    words = query_words('@user_id:{bob} | -alice* =>[KNN 5 @v $b] "x" (y) \\ ~z')
    assert words == ["user_id", "bob", "alice", "knn", "5", "v", "b", "x", "z"]  # "y" is a stop word
    assert render_query(words, {}) == TEXT + "(user\\_id | bob | alice | knn | 5 | v | b | x | z)"
    filtered = render_query(words, {"user_id": ("alice",)})
    assert filtered.split(" | ") == [
        "(@user_id:{alice} %s(%s))" % (TEXT, w) for w in ["user\\_id", "bob", "alice", "knn", "5", "v", "b", "x", "z"]
    ]
    assert query_words("the and of what") == []
