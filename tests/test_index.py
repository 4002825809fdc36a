"""``InvertedIndex`` and ``Analyzer`` on their own."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.memory import Analyzer
from primitives.memory.analysis import _TOKEN, ENGLISH_STOP_WORDS, words
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


_HOSTILE_TEXT = st.lists(
    st.sampled_from(list("aZ9_ '’`\"-.,;:!?\t\n\x00\\*@{}|()[]éÉßİ😀ﬁ\u00a0\u2028") + ["don't", "''", "x'y'z", "I'M"]),
    max_size=40,
).map("".join)


@given(text=_HOSTILE_TEXT)
@settings(max_examples=400, deadline=None)
def test_words_fast_path_matches_the_pattern(text: str) -> None:
    # the ASCII byte-table path must split exactly as the unicode pattern does
    assert words(text) == _TOKEN.findall(text.casefold())
    ascii_only = text.encode("ascii", "ignore").decode()
    assert words(ascii_only) == _TOKEN.findall(ascii_only.casefold())


def test_analyzer_stem_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("primitives.memory.analysis._STEM_CACHE_SIZE", len(ENGLISH_STOP_WORDS) + 10)
    analyzer = Analyzer()
    for i in range(100):
        assert analyzer.terms(f"running{i} the") == [f"running{i}"]
    assert len(analyzer._lookup) <= len(ENGLISH_STOP_WORDS) + 11
    assert analyzer.terms("the running") == ["run"]  # stop words survive the reset


def test_renumbering_when_document_numbers_run_out_keeps_every_statistic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("primitives.memory.inmemory.index._MAX_DOCNO", 20)
    index, fresh = InvertedIndex(), InvertedIndex()
    for i in range(60):  # many writes and removals: numbers run out twice
        terms = ["tea", "tea", f"w{i % 7}"] if i % 3 else ["cake", f"w{i % 5}"]
        index.add(f"k{i % 9}", terms, {"user_id": [f"u{i % 2}"]})
        if i % 4 == 0:
            index.remove(f"k{(i + 3) % 9}")
    for key in sorted(index._docno_by_key, key=index._docno_by_key.__getitem__):
        docno = index._docno_by_key[key]
        _, _, unique, pairs = index._docs[docno]
        length = index._docs[docno][1]
        tf = index._tfs
        terms = [t for t in unique for _ in range(tf.get(t, {}).get(docno, 1))]
        assert len(terms) == length
        fresh.add_pairs(key, terms, pairs)
    assert max(index._docno_by_key.values()) <= 20
    for query in (["tea"], ["cake", "w1"], ["w3", "tea"]):
        for flt in (None, {"user_id": ["u1"]}):
            assert index.search(query, tag_filter=flt, limit=20) == fresh.search(query, tag_filter=flt, limit=20)
    assert index.total_length == fresh.total_length
    assert {t: index.document_frequency(t) for t in ("tea", "cake", "w1")} == {
        t: fresh.document_frequency(t) for t in ("tea", "cake", "w1")
    }


def test_add_pairs_shares_the_tuple_and_a_pair_listed_twice_is_removed_once() -> None:
    index = InvertedIndex()
    pairs = (("user_id", "u1"), ("topics", "x"), ("topics", "x"))
    index.add_pairs("a", ["tea"], pairs)
    index.add_pairs("b", ["tea"], pairs)
    assert index.count({"topics": ("x",)}) == 2
    index.remove("a")
    index.remove("b")
    assert index.count({"topics": ("x",)}) == 0 and index.count({"user_id": ("u1",)}) == 0
    assert index._tags == {} and index._tag_pairs == {}


def test_canonical_returns_the_indexed_copy_of_a_tag_value() -> None:
    index = InvertedIndex()
    stored = "".join(["us", "er-1"])
    index.add("a", ["tea"], {"user_id": [stored]})
    other = "".join(["use", "r-1"])
    assert other is not stored and index.canonical("user_id", other) is stored
    assert index.canonical("user_id", "nobody") == "nobody"
