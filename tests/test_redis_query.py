"""Rendered RediSearch queries, compared as exact strings, hostile input included."""

from __future__ import annotations

import pytest

from primitives.memory.redis_backend.query import escape, query_terms, query_words, render_filter, render_query
from primitives.memory.redis_backend.schema import encode_tag

TEXT = "@terms|date:"


def test_plain_question() -> None:
    terms = query_terms("What did Caroline's friend paint?")
    assert terms == ["carolin", "friend", "paint"]  # the in-process analyzer's terms: stemmed
    assert render_query(terms, {}) == TEXT + "(carolin | friend | paint)"
    assert query_words("What did Caroline's friend paint?") == ["caroline", "friend", "paint"]  # what AMS gets


def test_filter_and_words() -> None:
    q = render_query(["blue", "sky"], {"user_id": ("alice",), "namespace": ("ns-1",)})
    f = "@tag_user_id:{616c696365} @tag_namespace:{6e732d31} "
    assert q == f"({f}{TEXT}(blue)) | ({f}{TEXT}(sky))"  # the filter is inside every alternative


def test_any_of_values_and_no_words() -> None:
    assert render_filter({"topics": ("a b", "c|d")}) == "@tag_topics:{612062 | 637c64}"
    assert render_query([], {"memory_type": ("semantic", "episodic")}) == (
        "@tag_memory_type:{73656d616e746963 | 657069736f646963}"
    )
    assert render_query([], {"session_id": ("s",)}) == "@tag_session_id:{73}"
    assert render_query([], {}) == "*"


# Every class of identifier the issue names: separators, whitespace around a value, control
# characters, NUL, unicode, RediSearch syntax. Each renders as the hex of its UTF-8 bytes.
HOSTILE_VALUES = [
    ("mallory,alice", "6d616c6c6f72792c616c696365"),
    ("alice ", "616c69636520"),
    (" alice", "20616c696365"),
    ("alice\t", "616c69636509"),
    ("alice\n", "616c6963650a"),
    ("alice\x00", "616c69636500"),
    ("a\x1fb", "611f62"),
    ("*", "2a"),
    ("@user_id:{x}", "40757365725f69643a7b787d"),
    ("a|b", "617c62"),
    ("-alice", "2d616c696365"),
    ("{}", "7b7d"),
    ("()", "2829"),
    ('"q"', "227122"),
    ("back\\slash", "6261636b5c736c617368"),
    ("=>[KNN 5 @v $b]", "3d3e5b4b4e4e20352040762024625d"),
    ("ünï 😀", "c3bc6ec3af20f09f9880"),
    ("%fuzzy%", "2566757a7a7925"),
    ("Alice", "416c696365"),
]


@pytest.mark.parametrize(("hostile", "encoded"), HOSTILE_VALUES)
def test_hostile_filter_values_render_as_hex_exactly(hostile: str, encoded: str) -> None:
    assert encode_tag(hostile) == encoded
    assert render_filter({"user_id": (hostile,)}) == "@tag_user_id:{%s}" % encoded
    assert render_filter({"namespace": (hostile,), "topics": (hostile, "x")}) == (
        "@tag_namespace:{%s} @tag_topics:{%s | 78}" % (encoded, encoded)
    )


def test_values_too_long_for_hex_render_as_a_digest() -> None:
    long = "é" * 1024  # 2,048 bytes: still hex (4,096 characters)
    assert encode_tag(long) == long.encode().hex()
    longer = "😀" * 1024  # 4,096 bytes
    tag = encode_tag(longer)
    assert tag.startswith("h") and len(tag) == 65 and tag != encode_tag("😀" * 1023 + "x")
    assert render_filter({"user_id": (longer,)}) == "@tag_user_id:{%s}" % tag


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
        ("nul\x00", "nul\\\x00"),
    ],
)
def test_hostile_words_are_escaped_exactly(hostile: str, escaped: str) -> None:
    assert escape(hostile) == escaped


def test_hostile_query_text_becomes_plain_words() -> None:
    words = query_words('@user_id:{bob} | -alice* =>[KNN 5 @v $b] "x" (y) \\ ~z \x00nul\x00 a,b')
    assert words == ["user_id", "bob", "alice", "knn", "5", "v", "b", "x", "z", "nul"]  # "y", "a" are stop words
    assert render_query(words, {}) == TEXT + "(user\\_id | bob | alice | knn | 5 | v | b | x | z | nul)"
    filtered = render_query(words, {"user_id": ("alice",)})
    assert filtered.split(" | ") == [
        "(@tag_user_id:{616c696365} %s(%s))" % (TEXT, w)
        for w in ["user\\_id", "bob", "alice", "knn", "5", "v", "b", "x", "z", "nul"]
    ]
    assert query_words("the and of what") == []


def test_query_terms_are_the_in_process_analyzer_terms() -> None:
    from primitives.memory.analysis import Analyzer

    for query in ("Apple’s ÉCOLE Straße don't it's x's ads", "apple'river\nline\x00nul 😀emoji"):
        assert query_terms(query) == list(dict.fromkeys(Analyzer().terms(query)))
    assert render_query(query_terms("apple'river"), {}) == TEXT + "(apple\\'riv)"
    assert render_query(query_terms("apple’s"), {}) == TEXT + "(apple\\’)"


def test_escape_fast_path_is_the_regex_for_every_character() -> None:
    # escape() skips the regex for str.isalnum() values: that must be exactly "nothing to escape"
    import re
    import sys

    special = re.compile(r"[^\w]|_")
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert char.isalnum() == (special.search(char) is None), hex(code)
    for word in ("abc", "ünï", "x_y", "a b", "١٢٣", "ǅ", "e\u0301", "", "\x00"):
        assert escape(word) == special.sub(r"\\\g<0>", word)


@pytest.mark.parametrize(
    ("words", "tag_filter", "offset", "num"),
    [
        (["carolin", "paint"], {}, 0, 10),
        (["blue"], {"user_id": ("alice",), "namespace": ("ns-1",)}, 20, 200),
        ([], {"memory_type": ("semantic", "episodic")}, 0, 1),
        ([], {}, 0, 10_000),
        # hostile terms and values: separators, whitespace, NUL, unicode, query syntax, CRLF (RESP's
        # own delimiter: a bulk string is length-prefixed, so it travels as data)
        (["ünï 😀", "nul\x00", "a\r\nb", "@x:{y}", "-z*", "$k"], {"user_id": ("mal|lory\r\n", " x ")}, 3, 7),
    ],
)
def test_keyword_command_is_pre_encoded_as_redis_py_would(words, tag_filter, offset, num) -> None:
    # the recall step sends keyword_packed's bytes: they must be exactly what redis-py's
    # pack_command makes of keyword_args (the command the docs and the bench show)
    from redis.asyncio.connection import Connection

    from primitives.memory.redis_backend.codec import RETURN_FIELDS
    from primitives.memory.redis_backend.search import Searcher

    for vector_returned in (True, False):
        searcher = Searcher(None, "mem:ïdx", "redis", returns=RETURN_FIELDS, vector_returned=vector_returned, dims=None)
        args = searcher.keyword_args(words, tag_filter, offset, num)
        assert searcher.keyword_packed(words, tag_filter, offset, num) == b"".join(Connection().pack_command(*args))
