"""Running searches on RediSearch and reading their replies, a damaged record at a time.

Keyword search is ``FT.SEARCH ... WITHSCORES SCORER BM25STD`` over the query
:func:`~primitives.memory.redis_backend.query.render_query` builds; vector search is a ``KNN``
clause behind the same TAG pre-filter, the vector and ``k`` passed as ``PARAMS``; hybrid sends
both in one pipeline and fuses them (:func:`~primitives.memory.embedding.fuse`).

Each hit is decoded on its own (:func:`~primitives.memory.redis_backend.codec.decode_record`). A
hit that does not decode is left out, reported
(:func:`~primitives.memory.backend.report_corrupt`) and counted; when that leaves fewer than the
hits asked for and the index has more, more rows are fetched (the next page for keyword search;
for KNN the query again with a larger ``k``; at most :data:`MAX_PAGES` requests per ranking), so
damaged records cost only themselves. Each damaged record is reported once per search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from primitives.errors import CorruptRecordError
from primitives.memory.backend import report_corrupt
from primitives.memory.embedding import HYBRID_CANDIDATES, fuse
from primitives.memory.record import SearchHit
from primitives.memory.redis_backend.codec import decode_record
from primitives.memory.redis_backend.query import render_filter, render_query
from primitives.validation import MAX_LIMIT

__all__ = ["MAX_PAGES", "Ranking", "Searcher"]

#: Most ``FT.SEARCH`` requests one ranking makes to make up for damaged hits.
MAX_PAGES = 4


@dataclass(slots=True)
class Ranking:
    """Decoded hits of one ranking, best first, and the damaged hits left out (key -> reason)."""

    hits: list[SearchHit]
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """How many damaged records were left out."""
        return len(self.damaged)


class Searcher:
    """Builds the ``FT.SEARCH`` commands of one backend and decodes their replies.

    Args:
        client: A redis-py asyncio client with ``decode_responses=False``.
        index: The index name.
        backend: The backend's name, for :func:`~primitives.memory.backend.report_corrupt`.
        returns: Hash fields each hit returns (``RETURN``).
        vector_returned: Return and decode each hit's ``vector`` (when no embedder is
            configured, a record's own embedding is part of what searches return).
        dims: The vector length of the index (``None``: any).
        record_of: The ``(namespace, id)`` a record key names (``None`` for another key), so a
            record the vector ranking found damaged (a NaN in its vector) is left out of the
            keyword ranking too.
    """

    def __init__(self, client: Any, index: str, backend: str, *, returns: Sequence[str], vector_returned: bool,
                 dims: int | None, record_of: Any = None) -> None:
        self.record_of = record_of
        self.client = client
        self.index = index
        self.backend = backend
        self.returns = [*returns, *(["vector"] if vector_returned else [])]
        self.vector_returned = vector_returned
        self.dims = dims

    # -- commands --------------------------------------------------------------------------

    def keyword_args(self, words: Sequence[str], tag_filter: Mapping[str, Sequence[str]], offset: int, num: int) -> list[Any]:
        """``FT.SEARCH`` for the BM25 ranking, rows ``offset .. offset + num``."""
        return ["FT.SEARCH", self.index, render_query(words, tag_filter), "WITHSCORES", "SCORER", "BM25STD",
                "RETURN", str(len(self.returns)), *self.returns, "LIMIT", str(offset), str(num), "DIALECT", "2"]

    def knn_args(self, vector: bytes, tag_filter: Mapping[str, Sequence[str]], offset: int, num: int) -> list[Any]:
        """``FT.SEARCH`` for the nearest ``offset + num`` vectors (cosine distance), rows
        ``offset .. offset + num``. The filter is rendered by ``render_filter``; the vector and
        ``k`` travel as ``PARAMS``, never inline."""
        clause = render_filter(tag_filter) if tag_filter else "*"
        query = f"({clause})=>[KNN $k @vector $vector AS __distance]"
        return ["FT.SEARCH", self.index, query, "PARAMS", "4", "k", str(offset + num), "vector", vector,
                "SORTBY", "__distance", "ASC", "RETURN", str(len(self.returns) + 1), *self.returns, "__distance",
                "LIMIT", str(offset), str(num), "DIALECT", "2"]

    # -- replies ---------------------------------------------------------------------------

    def keyword_hits(self, raw: list[Any]) -> tuple[list[SearchHit], list[tuple[str, str]]]:
        """Hits of a ``WITHSCORES`` reply ``[total, key, score, [field, value, ...], ...]``, in
        reply order, and ``(key, reason)`` of each damaged one."""
        hits: list[SearchHit] = []
        bad: list[tuple[str, str]] = []
        dims, vector = self.dims, self.vector_returned
        for i in range(1, len(raw), 3):
            values = raw[i + 2]
            it = iter(values)
            fields = dict(zip(it, it))
            key = raw[i]
            try:
                hits.append(SearchHit(decode_record(fields, _key(key), dims=dims, vector=vector), float(raw[i + 1])))
            except CorruptRecordError as exc:
                bad.append((exc.key, exc.reason))
        return hits, bad

    def knn_hits(self, raw: list[Any]) -> tuple[list[SearchHit], list[tuple[str, str]]]:
        """Hits of a KNN reply ``[total, key, [field, value, ..., "__distance", d], ...]``
        scored ``1 - cosine distance``, in reply order, and ``(key, reason)`` of each damaged one."""
        hits: list[SearchHit] = []
        bad: list[tuple[str, str]] = []
        dims, vector = self.dims, self.vector_returned
        for i in range(1, len(raw), 2):
            it = iter(raw[i + 1])
            fields = dict(zip(it, it))
            key = _key(raw[i])
            try:
                distance = float(fields.pop(b"__distance"))
                if not math.isfinite(distance):
                    raise CorruptRecordError("", key=key, reason=f"its vector is {distance} away from the query (NaN in the stored vector)")
                hits.append(SearchHit(decode_record(fields, key, dims=dims, vector=vector), 1.0 - distance))
            except (KeyError, ValueError) as exc:
                if not isinstance(exc, CorruptRecordError):
                    exc = CorruptRecordError("", key=key, reason=f"no usable distance: {exc}")
                bad.append((exc.key, exc.reason))
        return hits, bad

    # -- rankings --------------------------------------------------------------------------

    async def keyword(self, words: Sequence[str], tag_filter: Mapping[str, Sequence[str]], depth: int,
                      first: list[Any] | None = None) -> Ranking:
        """The best ``depth`` keyword hits; ``first`` is the reply to rows ``0 .. depth`` when
        it was already fetched (hybrid pipelines it). Further pages continue at the next row."""
        return await self._paged(lambda off, num: self.keyword_args(words, tag_filter, off, num),
                                 self.keyword_hits, 3, depth, first, from_start=False)

    async def knn(self, vector: bytes, tag_filter: Mapping[str, Sequence[str]], depth: int,
                  first: list[Any] | None = None) -> Ranking:
        """The ``depth`` nearest hits; ``first`` as in :meth:`keyword`. Further requests ask for
        more neighbours from the start (HNSW's answer for a larger ``k`` need not extend the
        smaller one, and a NaN distance sorts anywhere), keeping the hits not seen yet."""
        return await self._paged(lambda off, num: self.knn_args(vector, tag_filter, off, num),
                                 self.knn_hits, 2, depth, first, from_start=True)

    async def hybrid(self, words: Sequence[str], vector: bytes, tag_filter: Mapping[str, Sequence[str]],
                     limit: int) -> Ranking:
        """Both rankings, each ``max(limit, HYBRID_CANDIDATES)`` deep, their first pages in one
        pipeline (one round trip), fused by :func:`~primitives.memory.embedding.fuse` into the
        best ``limit``; no words: the vector ranking alone, fused the same way."""
        depth = max(limit, HYBRID_CANDIDATES)
        async with self.client.pipeline(transaction=False) as pipe:
            if words:
                pipe.execute_command(*self.keyword_args(words, tag_filter, 0, depth))
            pipe.execute_command(*self.knn_args(vector, tag_filter, 0, depth))
            replies = await pipe.execute()
        keyword = await self.keyword(words, tag_filter, depth, first=replies[0]) if words else Ranking([])
        knn = await self.knn(vector, tag_filter, depth, first=replies[-1])
        # a record whose vector is damaged is damaged: the keyword ranking (which does not read
        # vectors) must not bring it back
        unusable = {self.record_of(k) for k in knn.damaged} if self.record_of is not None else set()
        keyword_hits = [h for h in keyword.hits if (h.record.namespace, h.record.id) not in unusable]
        records = {(h.record.namespace, h.record.id): h.record for h in (*keyword_hits, *knn.hits)}
        fused = fuse([((h.record.namespace, h.record.id), h.score) for h in keyword_hits],  # type: ignore[misc]
                     [((h.record.namespace, h.record.id), h.score) for h in knn.hits], limit=limit)
        return Ranking([SearchHit(records[k], score) for k, score in fused], {**keyword.damaged, **knn.damaged})

    async def _paged(self, args: Any, parse: Any, per_row: int, depth: int, first: list[Any] | None, *,
                     from_start: bool) -> Ranking:
        raw = first if first is not None else await self.client.execute_command(*args(0, depth))
        hits, bad = parse(raw)
        damaged = dict(bad)
        seen = {(h.record.namespace, h.record.id) for h in hits}
        end = asked = depth  # rows covered so far; rows asked for by the last request
        pages = 1
        # a reply shorter than asked for is the last one (a KNN reply's total is capped at k, so
        # the row count, not the total, tells)
        while damaged and len(hits) < depth and pages < MAX_PAGES and (len(raw) - 1) // per_row >= asked:
            num = min(MAX_LIMIT, max(2 * (depth - len(hits)), 10))
            offset, asked = (0, end + num) if from_start else (end, num)
            raw = await self.client.execute_command(*args(offset, asked))
            end += num
            more, bad = parse(raw)
            damaged.update(bad)
            for hit in more:
                k = (hit.record.namespace, hit.record.id)
                if k not in seen:
                    seen.add(k)
                    hits.append(hit)
            pages += 1
        for key, reason in damaged.items():
            report_corrupt(self.backend, "search", key, reason)
        if per_row == 3:
            # equal scores: the most recently written record first
            hits.sort(key=lambda h: (h.score, h.record.updated_at), reverse=True)
        else:
            hits.sort(key=lambda h: h.score, reverse=True)
        return Ranking(hits[:depth], damaged)


def _key(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
