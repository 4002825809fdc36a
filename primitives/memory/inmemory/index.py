"""An incremental inverted index with Okapi BM25 ranking and exact tag filters.

Documents are added, replaced and removed one at a time; after every call the index describes
exactly the live documents (document count, lengths, document frequencies, tag sets), so scores
never count a removed, evicted or expired record.

Layout, chosen for memory (100,000 records of 30 words stay well under 250 MB with the store):
a term's posting list is a list of document numbers (8 bytes an entry: the number's int object
is shared by all of a document's entries), with a sparse
dict for the rare term frequencies above 1 and a count of dead entries; a term's document
frequency is the list's length less its dead entries; document lengths live once per document. A removal
marks the document's entries dead (the document number is no longer live) and a list is rewritten
once its dead entries outnumber its live ones, so removal is amortised O(terms of the document).
Document numbers are never reused, so a dead entry can never be mistaken for a new document.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["InvertedIndex"]

_COMPACT_MIN_DEAD = 16


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
        self._postings: dict[str, list[int]] = {}  # term -> docnos, live and dead
        self._dead: dict[str, int] = {}  # term -> dead entries in its posting list, when > 0
        self._tfs: dict[str, dict[int, int]] = {}  # term -> {docno: tf} where tf > 1
        self._tags: dict[tuple[str, str], set[int]] = {}
        self._tag_pairs: dict[tuple[str, str], tuple[str, str]] = {}  # one shared tuple per pair
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
        return len(postings) - self._dead.get(term, 0) if postings is not None else 0

    def posting_entries(self, term: str) -> int:
        """Entries, live and dead, in ``term``'s posting list (what a query for it scans)."""
        postings = self._postings.get(term)
        return len(postings) if postings is not None else 0

    def keys_with_tag(self, field: str, value: str) -> frozenset[str]:
        """Keys of the live documents tagged ``field=value``."""
        docs = self._docs
        return frozenset(docs[d].key for d in self._tags.get((field, value), ()))

    def add(self, key: str, terms: Sequence[str], tags: Mapping[str, Iterable[str]]) -> None:
        """Index ``key`` with ``terms`` (repeats count) and ``tags``; replaces a previous entry.

        Args:
            key: The document's key.
            terms: Analysed terms in any order; may be empty (the document is then found by no
                query, but counts for filters and ``len``).
            tags: Field name to the values the document carries for it.
        """
        if key in self._docno_by_key:
            self.remove(key)
        docno = self._next_docno
        self._next_docno = docno + 1
        unique = dict.fromkeys(terms)
        postings = self._postings
        get = postings.get
        for term in unique:
            docnos = get(term)
            if docnos is None:
                docnos = postings[term] = []
            docnos.append(docno)
        if len(unique) != len(terms):  # some term occurs more than once
            tfs = self._tfs
            for term, count in Counter(terms).items():
                if count > 1:
                    tfs.setdefault(term, {})[docno] = count
        index = self._tags
        canonical = self._tag_pairs
        pairs = []
        for field, values in tags.items():
            for value in values:
                pair = (field, value)
                members = index.get(pair)
                if members is None:
                    members = index[pair] = set()
                    canonical[pair] = pair
                else:
                    pair = canonical[pair]
                members.add(docno)
                pairs.append(pair)
        length = len(terms)
        self._docs[docno] = _Doc(key, length, tuple(unique), tuple(pairs))
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
        dead = self._dead
        tfs = self._tfs
        for term in doc.terms:
            docnos = postings[term]
            n_dead = dead.get(term, 0) + 1
            if n_dead == len(docnos):  # no live document has the term any more
                del postings[term]
                dead.pop(term, None)
                tfs.pop(term, None)
                continue
            term_tfs = tfs.get(term)
            if term_tfs is not None and term_tfs.pop(docno, None) is not None and not term_tfs:
                del tfs[term]
            if n_dead >= _COMPACT_MIN_DEAD and 2 * n_dead > len(docnos):
                docs = self._docs
                postings[term] = [d for d in docnos if d in docs]
                dead.pop(term, None)
            else:
                dead[term] = n_dead
        index = self._tags
        for pair in doc.tags:
            members = index[pair]
            members.discard(docno)
            if not members:
                del index[pair]
                del self._tag_pairs[pair]
        return True

    def clear(self) -> None:
        """Remove every document."""
        self._docno_by_key.clear()
        self._docs.clear()
        self._postings.clear()
        self._dead.clear()
        self._tfs.clear()
        self._tags.clear()
        self._tag_pairs.clear()
        self._total_length = 0

    def _groups(self, tag_filter: Mapping[str, Sequence[str]]) -> list[set[int]] | None:
        """One docno set per filtered field (a document must be in every set), smallest first;
        ``None`` when some field matches no document. Single-value fields share the index's own
        set (never modified here), so a filter costs nothing until a candidate is checked."""
        groups: list[set[int]] = []
        index = self._tags
        for field, values in tag_filter.items():
            if len(values) == 1:
                group = index.get((field, values[0]))
            else:
                group = set().union(*(index.get((field, v), ()) for v in values))
            if not group:
                return None
            groups.append(group)
        groups.sort(key=len)
        return groups

    def count(self, tag_filter: Mapping[str, Sequence[str]] | None = None) -> int:
        """Number of live documents matching ``tag_filter`` (all when ``None`` or empty)."""
        if not tag_filter:
            return len(self._docs)
        groups = self._groups(tag_filter)
        if groups is None:
            return 0
        first, rest = groups[0], groups[1:]
        return sum(1 for d in first if all(d in g for g in rest))

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
        groups = self._groups(tag_filter) if tag_filter else []
        if groups is None:
            return []
        postings = self._postings
        unique_terms = set(terms)
        if len(groups) > 1 and len(groups[0]) <= sum(len(postings.get(t, ())) for t in unique_terms):
            # a selective filter (a user's records among many): one C-level intersection of the
            # filter's sets costs less than checking every set for every posting
            groups = [groups[0].intersection(*groups[1:])]
            if not groups[0]:
                return []
        allowed = groups[0] if len(groups) == 1 else None
        k1, b = self.k1, self.b
        c1 = k1 * (1 - b)
        c2 = k1 * b * n_docs / self._total_length if self._total_length else 0.0
        scores: dict[int, float] = {}
        get_score = scores.get
        get_doc = docs.get
        dead = self._dead
        no_tfs: dict[int, int] = {}
        for term in unique_terms:
            docnos = postings.get(term)
            if docnos is None:
                continue
            df = len(docnos) - dead.get(term, 0)
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5)) * (k1 + 1)
            get_tf = self._tfs.get(term, no_tfs).get
            for d in docnos:
                doc = get_doc(d)
                if doc is None or (allowed is not None and d not in allowed):
                    continue
                if len(groups) > 1 and not all(d in g for g in groups):
                    continue
                tf = get_tf(d, 1)
                scores[d] = get_score(d, 0.0) + idf * tf / (tf + c1 + c2 * doc.length)
        if not scores:
            return []
        # (score, docno) pairs compare in C: best score first, then the newest document.
        best = heapq.nlargest(limit, zip(scores.values(), scores.keys()))
        return [(docs[d].key, s) for s, d in best]
