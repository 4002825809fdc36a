"""The inverted index stays exactly consistent with the live records under random sequences of
add, update, delete, LRU eviction and expiry (hypothesis, fake clock).

After every step the index is compared with statistics and BM25 scores recomputed from scratch
from the records the cache still holds.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from primitives.memory import InMemoryBackend, MemoryRecord
from tests.conftest import FakeClock

WORDS = ["apple", "apples", "banana", "cherry", "dog", "dogs", "running", "runs", "blue", "the", "and", "Zürich"]
IDS = [f"id{i}" for i in range(8)]
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)
ttls = st.one_of(st.none(), st.sampled_from([1.0, 5.0, 30.0]))


def reference_scores(backend: InMemoryBackend, records: list[MemoryRecord], query: str) -> dict[str, float]:
    """BM25 recomputed from scratch (same formula and constants as the index)."""
    analyzer = backend.analyzer
    docs = {r.id: analyzer.terms(backend.indexed_text(r)) for r in records}
    n = len(docs)
    if n == 0:
        return {}
    avgdl = sum(len(t) for t in docs.values()) / n
    df = Counter(term for terms in docs.values() for term in set(terms))
    k1, b = backend._index.k1, backend._index.b
    scores: dict[str, float] = {}
    for term in set(analyzer.terms(query)):
        if term not in df:
            continue
        idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
        for key, terms in docs.items():
            tf = terms.count(term)
            if tf:
                norm = tf + k1 * (1 - b + b * len(terms) / avgdl) if avgdl else tf + k1 * (1 - b)
                scores[key] = scores.get(key, 0.0) + idf * tf * (k1 + 1) / norm
    return scores


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.backend = InMemoryBackend(maxsize=5, clock=self.clock)
        self.deleted: set[str] = set()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    @rule(id=st.sampled_from(IDS), text=texts, ttl=ttls, user=st.sampled_from(["u1", "u2"]))
    def add(self, id: str, text: str, ttl: float | None, user: str) -> None:
        self.run(self.backend.add([MemoryRecord(text=text, id=id, ttl=ttl, user_id=user)]))
        self.deleted.discard(id)

    @rule(ids=st.lists(st.sampled_from(IDS), max_size=3))
    def delete(self, ids: list[str]) -> None:
        self.run(self.backend.delete(ids))
        self.deleted.update(ids)

    @rule(id=st.sampled_from(IDS))
    def touch(self, id: str) -> None:
        self.run(self.backend.get(id))  # changes LRU order, hence which record is evicted next

    @rule(seconds=st.sampled_from([0.5, 2.0, 10.0, 40.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def index_matches_live_records(self) -> None:
        records = self.backend._live_records()
        index = self.backend._index
        assert len(records) <= 5
        assert not ({r.id for r in records} & self.deleted)
        assert len(index) == len(records)
        assert self.run(self.backend.count()) == len(records)
        assert {(r.namespace, r.id) for r in records} == set(index._docno_by_key)
        analyzer = self.backend.analyzer
        all_terms = [analyzer.terms(self.backend.indexed_text(r)) for r in records]
        assert index.total_length == sum(len(t) for t in all_terms)
        df = Counter(term for terms in all_terms for term in set(terms))
        for term in {t for w in WORDS for t in analyzer.terms(w)}:
            assert index.document_frequency(term) == df.get(term, 0), term
        for user in ("u1", "u2"):
            expected = {(r.namespace, r.id) for r in records if r.user_id == user}
            assert set(index.keys_with_tag("user_id", user)) == expected
        for query in ("apple dogs", "running blue", "cherry banana zürich"):
            result = self.run(self.backend.search(query, limit=10))
            got = {h.record.id: h.score for h in result.hits}
            want = reference_scores(self.backend, records, query)
            assert got.keys() == want.keys()
            for key, score in want.items():
                assert math.isclose(got[key], score, rel_tol=1e-9), (key, got[key], score)
            scores = [h.score for h in result.hits]
            assert scores == sorted(scores, reverse=True)


IndexMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIndexConsistency = IndexMachine.TestCase
