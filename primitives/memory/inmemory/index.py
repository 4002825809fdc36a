"""An incremental inverted index with Okapi BM25 ranking and exact tag filters.

Documents are added, replaced and removed one at a time; after every call the index describes
exactly the live documents (document count, lengths, document frequencies, tag sets), so scores
never count a removed, evicted or expired record.

Layout, chosen for memory and write speed (docs/in-memory-backend.md has the figures): a
term's posting list is an ``array('I')`` of document numbers (4 bytes an entry), with a sparse
dict for the rare term frequencies above 1 and a count of dead entries; a term's document
frequency is the array's length less its dead entries. Per document one tuple ``(key, length,
unique terms, tag pairs)`` of immutable values (the terms are the analyzer's interned strings, the
tag pairs shared tuples), which the garbage collector stops tracking. Adding a document appends
its number to each of its terms' arrays in one C-level pass (``map`` over ``array.append``).

A removal marks the document's entries dead (the document number is no longer live) and an array
is rewritten once its dead entries outnumber its live ones, so removal is amortised O(terms of the
document). Document numbers are never reused, so a dead entry can never be mistaken for a new
document; when they reach the array type's limit (2**32) every live document is renumbered
0..n-1 in its order, once per ~4 billion writes.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import repeat

__all__ = ["InvertedIndex"]

_COMPACT_MIN_DEAD = 16
#: Largest document number an ``array('I')`` holds (then the index renumbers).
_MAX_DOCNO = 2**32 - 1
_APPEND = array.append

# a document: (key, length, unique terms, tag pairs); fields by position
_KEY, _LENGTH, _TERMS, _TAGS = 0, 1, 2, 3
_Doc = tuple  # tuple[Hashable, int, tuple[str, ...], tuple[tuple[str, str], ...]]


class _TagSets(dict):
    """(field, value) -> set of document numbers; a new pair gets an empty set on lookup and is
    recorded in ``canonical`` (pair -> the pair tuple first seen)."""

    __slots__ = ("canonical",)

    def __init__(self, canonical: dict[tuple[str, str], tuple[str, str]]) -> None:
        super().__init__()
        self.canonical = canonical

    def __missing__(self, pair: tuple[str, str]) -> set[int]:
        members = self[pair] = set()
        self.canonical[pair] = pair
        return members


class _Postings(dict):
    """term -> ``array('I')`` of document numbers; a new term gets an empty array on lookup."""

    __slots__ = ()

    def __missing__(self, term: str) -> array:
        docnos = self[term] = array("I")
        return docnos


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
        self._docno_by_key: dict[Hashable, int] = {}
        self._docs: dict[int, _Doc] = {}
        self._postings: _Postings = _Postings()  # term -> docnos, live and dead
        self._dead: dict[str, int] = {}  # term -> dead entries in its posting list, when > 0
        self._tfs: dict[str, dict[int, int]] = {}  # term -> {docno: tf} where tf > 1
        self._tag_pairs: dict[tuple[str, str], tuple[str, str]] = {}  # one shared tuple per pair
        self._tags: _TagSets = _TagSets(self._tag_pairs)  # pair -> docnos
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
        return frozenset(docs[d][_KEY] for d in self._tags.get((field, value), ()))

    def add(self, key: str, terms: Sequence[str], tags: Mapping[str, Iterable[str]]) -> None:
        """Index ``key`` with ``terms`` (repeats count) and ``tags``; replaces a previous entry.

        Args:
            key: The document's key.
            terms: Analysed terms in any order; may be empty (the document is then found by no
                query, but counts for filters and ``len``).
            tags: Field name to the values the document carries for it.
        """
        self.add_pairs(key, terms, tuple((field, value) for field, values in tags.items() for value in values))

    def add_pairs(self, key: Hashable, terms: Sequence[str], pairs: tuple[tuple[str, str], ...]) -> None:
        """:meth:`add` with the tags as ``(field, value)`` pairs (a tuple the caller may share
        between documents: the index keeps it as given)."""
        docno_by_key = self._docno_by_key
        if key in docno_by_key:
            self.remove(key)
        docno = self._next_docno
        if docno > _MAX_DOCNO:
            self._renumber()
            docno = self._next_docno
        self._next_docno = docno + 1
        unique = tuple(set(terms))
        # C-level passes: postings[term].append(docno) for every distinct term, and
        # tags[pair].add(docno) for every tag (a new term or pair gets its container on lookup)
        any(map(_APPEND, map(self._postings.__getitem__, unique), repeat(docno)))
        any(map(set.add, map(self._tags.__getitem__, pairs), repeat(docno)))
        length = len(terms)
        if len(unique) != length:  # some term occurs more than once
            tfs = self._tfs
            for term, count in Counter(terms).items():
                if count > 1:
                    tfs.setdefault(term, {})[docno] = count
        self._docs[docno] = (key, length, unique, pairs)
        docno_by_key[key] = docno
        self._total_length += length

    def canonical(self, field: str, value: str) -> str:
        """The index's own copy of tag value ``value`` of ``field`` when a live document carries
        it, else ``value``: a store can keep one string object per distinct user, session..."""
        pair = self._tag_pairs.get((field, value))
        return pair[1] if pair is not None else value

    def _renumber(self) -> None:
        """Number the live documents 0..n-1 in their order (document numbers ran out)."""
        # every container is updated in place: callers may hold references to them
        new = {old: i for i, old in enumerate(sorted(self._docs))}
        docs = {new[d]: doc for d, doc in self._docs.items()}
        self._docs.clear()
        self._docs.update(docs)
        for key, d in self._docno_by_key.items():
            self._docno_by_key[key] = new[d]
        for term, docnos in self._postings.items():
            self._postings[term] = array("I", [new[d] for d in docnos if d in new])
        self._dead.clear()
        for term, tfs in self._tfs.items():
            self._tfs[term] = {new[d]: n for d, n in tfs.items()}
        for pair, members in self._tags.items():
            self._tags[pair] = {new[d] for d in members}
        self._next_docno = len(new)

    def remove(self, key: str) -> bool:
        """Remove ``key``; ``False`` when it was not indexed."""
        docno = self._docno_by_key.pop(key, None)
        if docno is None:
            return False
        key_, length, terms, pairs = self._docs.pop(docno)
        self._total_length -= length
        postings = self._postings
        dead = self._dead
        tfs = self._tfs
        for term in terms:
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
                postings[term] = array("I", [d for d in docnos if d in docs])
                dead.pop(term, None)
            else:
                dead[term] = n_dead
        index = self._tags
        for pair in pairs:
            members = index.get(pair)
            if members is None:  # a pair listed twice, already gone
                continue
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
                scores[d] = get_score(d, 0.0) + idf * tf / (tf + c1 + c2 * doc[1])
        if not scores:
            return []
        # (score, docno) pairs compare in C: best score first, then the newest document.
        best = heapq.nlargest(limit, zip(scores.values(), scores.keys()))
        return [(docs[d][_KEY], s) for s, d in best]
