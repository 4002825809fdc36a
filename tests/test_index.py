"""``InvertedIndex`` and ``Analyzer`` on their own."""

from __future__ import annotations

import math

import pytest

from primitives.memory import Analyzer
from primitives.memory.analysis import ENGLISH_STOP_WORDS
from primitives.memory.inmemory.index import InvertedIndex


def test_compaction_rewrites_posting_lists_and_keeps_statistics() -> None:
    index = InvertedIndex()
    for i in range(100):
        index.add(f"k{i}", ["common", f"own{i}"], {})
    assert index.posting_entries("common") == 100
    for i in range(80):
        index.remove(f"k{i}")
    # dead entries were dropped once they outnumbered the live ones
    assert index.posting_entries("common") < 60
    assert index.document_frequency("common") == 20
    assert index.document_frequency("own5") == 0
    assert index.posting_entries("own5") == 0
    assert {k for k, _ in index.search(["common"], limit=100)} == {f"k{i}" for i in range(80, 100)}


def test_repeated_terms_count_and_are_forgotten_on_replace() -> None:
    index = InvertedIndex()
    index.add("a", ["tea", "tea", "tea", "cake"], {})
    index.add("b", ["tea", "cake", "cake", "cake"], {})
    (top, s_top), (second, s_second) = index.search(["tea"])
    assert top == "a" and s_top > s_second
    index.add("a", ["cake"], {})  # replace: a no longer mentions tea
    assert [k for k, _ in index.search(["tea"])] == ["b"]
    assert index.total_length == 5


def test_bm25_score_matches_formula() -> None:
    index = InvertedIndex(k1=1.2, b=0.75)
    index.add("d1", ["x", "y"], {})
    index.add("d2", ["y", "z", "z"], {})
    ((key, score),) = index.search(["x"])
    n, df, dl, avgdl = 2, 1, 2, 2.5
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    assert key == "d1"
    assert score == pytest.approx(idf * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl)))


def test_tag_filters_and_counts() -> None:
    index = InvertedIndex()
    index.add("a", ["x"], {"user_id": ["u1"], "topics": ["t1", "t2"]})
    index.add("b", ["x"], {"user_id": ["u2"], "topics": ["t2"]})
    assert [k for k, _ in index.search(["x"], tag_filter={"topics": ("t1",)})] == ["a"]
    assert {k for k, _ in index.search(["x"], tag_filter={"topics": ("t1", "t2")})} == {"a", "b"}
    assert index.search(["x"], tag_filter={"user_id": ("u2",), "topics": ("t1",)}) == []
    assert index.count({"topics": ("t2",)}) == 2
    assert index.count({"user_id": ("u1",), "topics": ("t2",)}) == 1
    index.remove("a")
    assert index.keys_with_tag("topics", "t1") == frozenset()


@pytest.mark.parametrize(("k1", "b"), [(-1, 0.5), (1.2, 1.5), (1.2, -0.1)])
def test_bad_parameters(k1: float, b: float) -> None:
    with pytest.raises(ValueError):
        InvertedIndex(k1=k1, b=b)


def test_analyzer_drops_stop_words_and_stems() -> None:
    analyzer = Analyzer()
    assert analyzer.terms("What did Caroline's friends paint?") == ["carolin", "friend", "paint"]
    assert analyzer.terms("I'm running, she runs; they ran") == ["run", "run", "ran"]
    assert analyzer.terms("the and of") == []
    assert analyzer.terms("") == []
    assert analyzer.terms("Ünïcode ÇAFÉ straße") == ["ünïcode", "çafé", "strass"]
    assert "what" in ENGLISH_STOP_WORDS and "when" in ENGLISH_STOP_WORDS


def test_analyzer_without_stemming_and_stop_words() -> None:
    analyzer = Analyzer(stop_words=(), stem=False)
    assert analyzer.terms("The Running dogs") == ["the", "running", "dogs"]


def test_analyzer_shares_one_object_per_stem() -> None:
    analyzer = Analyzer()
    first = analyzer.terms("gardening")[0]
    second = analyzer.terms("more gardening")[0]
    assert first is second
