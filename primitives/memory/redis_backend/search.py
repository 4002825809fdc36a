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

The keyword command, the recall step's only round trip, is sent pre-encoded: its fixed
arguments (``FT.SEARCH index``, ``WITHSCORES ... RETURN n fields``, ``DIALECT 2``) are RESP bytes
made once per searcher, and only the query string and the row range are encoded per call
(:meth:`Searcher.keyword_packed`; the same bytes redis-py's ``pack_command`` makes of
:meth:`Searcher.keyword_args`, asserted by ``tests/test_redis_query.py``). On a single Redis
(``redis.asyncio.Redis``) those bytes go out on a pooled connection with the pool's retry
(:func:`send_packed`); any other client (a cluster client) gets ``execute_command``. Measured
in ``docs/redis-backend.md``: redis-py's asyncio ``pack_command`` is pure Python (hiredis parses
replies but does not pack commands there) and took 20-30 µs of the step's client CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

import redis.asyncio as aioredis

from primitives.errors import CorruptRecordError
from primitives.memory.backend import report_corrupt
from primitives.memory.embedding import HYBRID_CANDIDATES, fuse
from primitives.memory.record import SearchHit
from primitives.memory.redis_backend.codec import decode_record
from primitives.memory.redis_backend.query import render_filter, render_query
from primitives.validation import MAX_LIMIT

__all__ = ["MAX_PAGES", "Ranking", "Searcher", "resp_bulk", "send_packed"]

#: Most ``FT.SEARCH`` requests one ranking makes to make up for damaged hits.
MAX_PAGES = 4

# SearchHit's slot setters: a hit of a decoded record is built without its dataclass __init__
# (a frozen dataclass sets each field through object.__setattr__)
_new = object.__new__
_set_hit_record, _set_hit_score = (getattr(SearchHit, f.name).__set__ for f in dataclass_fields(SearchHit))
assert [f.name for f in dataclass_fields(SearchHit)] == ["record", "score"], "update keyword_hits with SearchHit"


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
        # the keyword command's fixed parts, RESP-encoded once (keyword_packed); the header counts
        # the arguments of keyword_args
        fixed = ["WITHSCORES", "SCORER", "BM25STD", "RETURN", str(len(self.returns)), *self.returns, "LIMIT"]
        self._keyword_head = b"*%d\r\n%b%b" % (len(fixed) + 7, resp_bulk(b"FT.SEARCH"), resp_bulk(index.encode()))
        self._keyword_middle = b"".join(resp_bulk(a.encode()) for a in fixed)
        self._keyword_tail = resp_bulk(b"DIALECT") + resp_bulk(b"2")
        # pre-encoded commands need a connection pool to send them on (a single Redis)
        self._pool = client.connection_pool if isinstance(client, aioredis.Redis) and client.connection is None else None

    # -- commands --------------------------------------------------------------------------

    def keyword_args(self, words: Sequence[str], tag_filter: Mapping[str, Sequence[str]], offset: int, num: int) -> list[Any]:
        """``FT.SEARCH`` for the BM25 ranking, rows ``offset .. offset + num``."""
        return ["FT.SEARCH", self.index, render_query(words, tag_filter), "WITHSCORES", "SCORER", "BM25STD",
                "RETURN", str(len(self.returns)), *self.returns, "LIMIT", str(offset), str(num), "DIALECT", "2"]

    def keyword_packed(self, words: Sequence[str], tag_filter: Mapping[str, Sequence[str]], offset: int, num: int) -> bytes:
        """:meth:`keyword_args` as the RESP bytes sent on the wire (what redis-py's
        ``pack_command`` makes of them), built from the parts encoded at construction."""
        query = render_query(words, tag_filter).encode()
        return b"".join((self._keyword_head, b"$%d\r\n" % len(query), query, b"\r\n", self._keyword_middle,
                         resp_bulk(b"%d" % offset), resp_bulk(b"%d" % num), self._keyword_tail))

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
            it = iter(raw[i + 2])
            try:
                # the key is decoded only to name a damaged record
                record = decode_record(dict(zip(it, it)), "", dims=dims, vector=vector)
            except CorruptRecordError as exc:
                bad.append((_key(raw[i]), exc.reason))
                continue
            hit = _new(SearchHit)
            _set_hit_record(hit, record)
            _set_hit_score(hit, float(raw[i + 1]))
            hits.append(hit)
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
        if self._pool is not None:
            pool = self._pool
            return await self._paged(lambda off, num: send_packed(pool, self.keyword_packed(words, tag_filter, off, num)),
                                     self.keyword_hits, 3, depth, first, from_start=False)
        return await self._paged(lambda off, num: self.client.execute_command(*self.keyword_args(words, tag_filter, off, num)),
                                 self.keyword_hits, 3, depth, first, from_start=False)

    async def knn(self, vector: bytes, tag_filter: Mapping[str, Sequence[str]], depth: int,
                  first: list[Any] | None = None) -> Ranking:
        """The ``depth`` nearest hits; ``first`` as in :meth:`keyword`. Further requests ask for
        more neighbours from the start (HNSW's answer for a larger ``k`` need not extend the
        smaller one, and a NaN distance sorts anywhere), keeping the hits not seen yet."""
        return await self._paged(lambda off, num: self.client.execute_command(*self.knn_args(vector, tag_filter, off, num)),
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

    async def _paged(self, request: Any, parse: Any, per_row: int, depth: int, first: list[Any] | None, *,
                     from_start: bool) -> Ranking:
        # request(offset, num): the reply to rows offset .. offset + num
        raw = first if first is not None else await request(0, depth)
        hits, bad = parse(raw)
        damaged = dict(bad)
        seen = {(h.record.namespace, h.record.id) for h in hits} if damaged else set()
        end = asked = depth  # rows covered so far; rows asked for by the last request
        pages = 1
        # a reply shorter than asked for is the last one (a KNN reply's total is capped at k, so
        # the row count, not the total, tells)
        while damaged and len(hits) < depth and pages < MAX_PAGES and (len(raw) - 1) // per_row >= asked:
            num = min(MAX_LIMIT, max(2 * (depth - len(hits)), 10))
            offset, asked = (0, end + num) if from_start else (end, num)
            raw = await request(offset, asked)
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


def resp_bulk(value: bytes) -> bytes:
    """``value`` as a RESP bulk string, ``$<length>\\r\\n<value>\\r\\n``
    (https://redis.io/docs/latest/develop/reference/protocol-spec/#bulk-strings)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


async def send_packed(pool: Any, packed: bytes) -> Any:
    """Send one RESP-encoded command on a connection of ``pool`` (a redis-py asyncio
    ``ConnectionPool``) and return its parsed reply, as ``Redis.execute_command`` does: the
    connection's ``retry`` governs a failed attempt (the connection is dropped, and with the
    backend's ``Retry(NoBackoff(), 1)`` sent once more on a fresh one), and the connection goes
    back to the pool either way.

    Raises:
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError: the retries failed.
        redis.exceptions.ResponseError: the server refused the command.
    """
    conn = await pool.get_connection()
    try:
        return await conn.retry.call_with_retry(lambda: _round_trip(conn, packed), lambda error: conn.disconnect())
    finally:
        await pool.release(conn)


async def _round_trip(conn: Any, packed: bytes) -> Any:
    await conn.send_packed_command(packed)
    return await conn.read_response()
