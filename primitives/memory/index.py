"""An incremental inverted index with Okapi BM25 ranking and exact tag filters.

Documents are added, replaced and removed one at a time; after every call the index describes
exactly the live documents (document count, lengths, document frequencies, tag sets), so scores
never count a removed, evicted or expired record. Posting lists are compact ``array`` columns
(8-byte document number, 4-byte term frequency, 4-byte document length): a removal marks its
entries dead and a list is rewritten once its dead entries outnumber the live ones, so removal is
amortised O(terms of the document).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["InvertedIndex"]

_COMPACT_MIN_DEAD = 16


class _Postings:
    __slots__ = ("docnos", "tfs", "lengths", "df", "dead")

    def __init__(self) -> None:
        self.docnos = array("q")
        self.tfs = array("I")
        self.lengths = array("I")
        self.df = 0  # live documents containing the term
        self.dead = 0  # entries whose document was removed


class _Doc:
    __slots__ = ("key", "length", "terms", "tags")

    def __init__(
        self, key: str, length: int, terms: tuple[str, ...], tags: tuple[tuple[str, str], ...]
    ) -> None:
        self.key = key
        self.length = length
        self.terms = terms
        self.tags = tags


class InvertedIndex:
    """Keyword index of string keys to analysed terms and tag values.

    Ranking is Okapi BM25 (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and
    Beyond", 2009) with ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` (Lucene's non-negative form)
    and the usual defaults ``k1 = 1.2``, ``b = 0.75``. Each distinct query term counts once.
    Scores are ``>= 0``, unbounded, higher is better.

    Args:
        k1: Term-frequency saturation, ``>= 0``.
        b: Length normalisation, in ``[0, 1]``.

    Raises:
        ValueError: ``k1`` or ``b`` is out of range.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        if not k1 >= 0:
            raise ValueError(f"k1 must be >= 0, got {k1!r}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        self.k1 = k1
        self.b = b
        self._next_docno = 0
        self._docno_by_key: dict[str, int] = {}
        self._docs: dict[int, _Doc] = {}
        self._postings: dict[str, _Postings] = {}
        self._tags: dict[tuple[str, str], set[int]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docno_by_key

    @property
    def total_length(self) -> int:
        """Sum of the lengths (in terms) of the live documents."""
        return self._total_length

    def document_frequency(self, term: str) -> int:
        """Number of live documents that contain ``term`` (an analysed term)."""
        postings = self._postings.get(term)
        return postings.df if postings is not None else 0

    def keys_with_tag(self, field: str, value: str) -> frozenset[str]:
        """Keys of the live documents tagged ``field=value``."""
        docs = self._docs
        return frozenset(docs[d].key for d in self._tags.get((field, value), ()))

    def add(self, key: str, terms: Sequence[str], tags: Mapping[str, Iterable[str]]) -> None:
        """Index ``key`` with ``terms`` (repeats count) and ``tags``; replaces a previous entry.

        Args:
            key: The document's key.
            terms: Analysed terms in any order; may be empty (the document is then findable by
                no query, but its tags are kept).
            tags: Field name to the values the document carries for it.
        """
        if key in self._docno_by_key:
            self.remove(key)
        docno = self._next_docno
        self._next_docno = docno + 1
        tf: dict[str, int] = {}
        for term in terms:
            tf[term] = tf.get(term, 0) + 1
        length = len(terms)
        postings = self._postings
        for term, count in tf.items():
            p = postings.get(term)
            if p is None:
                p = postings[term] = _Postings()
            p.docnos.append(docno)
            p.tfs.append(count)
            p.lengths.append(length)
            p.df += 1
        tag_pairs = tuple((f, v) for f, values in tags.items() for v in values)
        index = self._tags
        for pair in tag_pairs:
            members = index.get(pair)
            if members is None:
                members = index[pair] = set()
            members.add(docno)
        self._docs[docno] = _Doc(key, length, tuple(tf), tag_pairs)
        self._docno_by_key[key] = docno
        self._total_length += length

    def remove(self, key: str) -> bool:
        """Remove ``key``; ``False`` when it was not indexed."""
        docno = self._docno_by_key.pop(key, None)
        if docno is None:
            return False
        doc = self._docs.pop(docno)
        self._total_length -= doc.length
        postings = self._postings
        for term in doc.terms:
            p = postings[term]
            p.df -= 1
            if p.df == 0:
                del postings[term]
                continue
            p.dead += 1
            if p.dead >= _COMPACT_MIN_DEAD and p.dead > p.df:
                self._compact(p)
        index = self._tags
        for pair in doc.tags:
            members = index[pair]
            members.discard(docno)
            if not members:
                del index[pair]
        return True

    def _compact(self, p: _Postings) -> None:
        docs = self._docs
        keep = [i for i, d in enumerate(p.docnos) if d in docs]
        p.docnos = array("q", (p.docnos[i] for i in keep))
        p.tfs = array("I", (p.tfs[i] for i in keep))
        p.lengths = array("I", (p.lengths[i] for i in keep))
        p.dead = 0

    def clear(self) -> None:
        """Remove every document."""
        self._docno_by_key.clear()
        self._docs.clear()
        self._postings.clear()
        self._tags.clear()
        self._total_length = 0

    def _allowed(self, tag_filter: Mapping[str, Sequence[str]]) -> set[int] | None:
        """Docnos matching every field (any of its values); ``None`` means no restriction."""
        groups: list[set[int]] = []
        index = self._tags
        for field, values in tag_filter.items():
            group: set[int] = set()
            for value in values:
                group |= index.get((field, value), set())
            if not group:
                return set()
            groups.append(group)
        if not groups:
            return None
        groups.sort(key=len)
        allowed = set(groups[0])
        for group in groups[1:]:
            allowed &= group
        return allowed

    def count(self, tag_filter: Mapping[str, Sequence[str]] | None = None) -> int:
        """Number of live documents matching ``tag_filter`` (all when ``None`` or empty)."""
        if not tag_filter:
            return len(self._docs)
        allowed = self._allowed(tag_filter)
        return len(self._docs) if allowed is None else len(allowed)

    def search(
        self,
        terms: Iterable[str],
        *,
        tag_filter: Mapping[str, Sequence[str]] | None = None,
        limit: int = 10,
    ) -> list[tuple[str, float]]:
        """Best ``limit`` keys for the query ``terms`` among the documents matching ``tag_filter``.

        Args:
            terms: Analysed query terms; repeats are ignored.
            tag_filter: Field to accepted values: a document matches when, for every field, it
                carries at least one of the values. ``None`` or empty: no restriction.
            limit: Maximum number of results, ``>= 1``.

        Returns:
            ``(key, score)`` pairs, best first; equal scores put the most recently indexed first.
            Only documents sharing at least one term with the query are returned.
        """
        docs = self._docs
        n_docs = len(docs)
        if n_docs == 0:
            return []
        allowed = self._allowed(tag_filter) if tag_filter else None
        if allowed is not None and not allowed:
            return []
        k1, b = self.k1, self.b
        c1 = k1 * (1 - b)
        c2 = k1 * b * n_docs / self._total_length if self._total_length else 0.0
        k1p1 = k1 + 1
        scores: dict[int, float] = {}
        get = scores.get
        postings = self._postings
        for term in set(terms):
            p = postings.get(term)
            if p is None:
                continue
            idf = math.log(1 + (n_docs - p.df + 0.5) / (p.df + 0.5)) * k1p1
            if p.dead == 0 and allowed is None:
                for d, tf, dl in zip(p.docnos, p.tfs, p.lengths):
                    scores[d] = get(d, 0.0) + idf * tf / (tf + c1 + c2 * dl)
            else:
                for d, tf, dl in zip(p.docnos, p.tfs, p.lengths):
                    if d in docs and (allowed is None or d in allowed):
                        scores[d] = get(d, 0.0) + idf * tf / (tf + c1 + c2 * dl)
        if not scores:
            return []
        best = heapq.nlargest(limit, scores.items(), key=_score_then_docno)
        return [(docs[d].key, s) for d, s in best]


def _score_then_docno(item: tuple[int, float]) -> tuple[float, int]:
    return item[1], item[0]
