"""``InMemoryBackend``: the zero-setup default, a bounded in-process store with BM25 search."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from primitives.embeddings.base import Embedder
from primitives.memory.analysis import Analyzer
from primitives.memory.backend import Health, MemoryBackend, SearchResult
from primitives.memory.changes import TOMBSTONE_TTL, Change, ChangeEntry, Tombstone, select_changes
from primitives.sync.rows import micros
from primitives.memory.embedding import HYBRID_CANDIDATES, check_embeddings, embedding_text, fuse
from primitives.memory.inmemory.index import InvertedIndex
from primitives.memory.inmemory.store import RecordStore
from primitives.memory.record import (
    DEFAULT_TTLS,
    INDEXED_METADATA_KEYS,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
    resolved_ttls,
    trusted_replace,
    utc_from_timestamp,
    with_timestamps,
    written_date,
)
from primitives.memory.skills import InMemorySkillLedger, SkillStats
from primitives.memory.temporal import TimeRange, split_filter
from primitives.validation import check_int, check_ttl

__all__ = ["InMemoryBackend"]

#: A record's key in the store and its indexes: ``(namespace, id)``.
Key = tuple[str, str]
#: Distinct (namespace, memory_type, user_id, session_id, topics) tag combinations remembered.
_TAG_COMBINATIONS = 65_536


class InMemoryBackend(MemoryBackend):
    """Records in process memory, searched with BM25 over analysed text.

    Storage is a :class:`~primitives.memory.inmemory.store.RecordStore` (LRU with a per-record
    expiry, as cachetools' ``TLRUCache`` in less memory) keyed by ``(namespace, id)``: at most ``maxsize``
    records (the least recently used one, by ``get``, ``search`` hit or write, is evicted to
    make room), each expiring ``ttl`` seconds after its last write (``ttl=None`` takes the memory
    type's default from ``default_ttls``). An :class:`~primitives.memory.inmemory.index.InvertedIndex`
    is updated on every add, replace, delete, eviction and expiry, so search sees exactly the
    live records. Every public call first purges what has expired by the injected ``clock``.

    What a record is indexed with: its ``text``, the string values of its metadata keys in
    ``indexed_metadata`` (default ``speaker`` and ``context``) and, when ``index_dates``, its
    ``created_at`` date written out ("8 May 2023"). Why: docs/in-memory-backend.md.

    Vectors (when an ``embedder`` is given): each record is embedded on write (unless it comes
    with an ``embedding`` of the embedder's ``dims``) from :func:`embedding_text`, and kept in a
    :class:`~primitives.memory.inmemory.vectors.VectorIndex` (exact cosine); ``search(mode=...)``
    ranks by ``"keyword"`` (BM25), ``"vector"`` (cosine) or ``"hybrid"`` (both, fused by
    :func:`~primitives.memory.embedding.fuse`; the default with an embedder). A record's
    embedding is returned by ``get`` but not carried by search hits.

    Working memory: per ``(namespace, session_id)`` a deque of the last ``working_memory_size``
    messages, oldest first; a session untouched for ``default_ttls[WORKING]`` seconds (1 h) is
    forgotten, and at most ``max_sessions`` sessions are kept (least recently written dropped
    first).

    Records are Python objects in this process, so nothing here can be damaged the way stored
    bytes can: searches never skip a record (``SearchResult.skipped`` is 0).

    Not thread-safe: use it from one event loop. Each call runs without awaiting, so concurrent
    tasks on that loop see every call as atomic.

    Args:
        maxsize: Maximum number of long-term records, ``>= 1``.
        default_ttls: Seconds per memory type when a record's ``ttl`` is ``None``; a missing type
            or ``None`` means never expires.
        working_memory_size: Messages kept per session, ``>= 1``.
        max_sessions: Sessions kept in working memory, ``>= 1``.
        analyzer: Turns text into terms; the English :class:`Analyzer` by default.
        index_dates: Index the written-out ``created_at`` date with the text.
        indexed_metadata: Metadata keys whose string values are indexed with the text.
        k1, b: BM25 parameters (see :class:`InvertedIndex`).
        clock: Seconds since the epoch (``time.time`` by default); drives expiry and timestamps.
        embedder: Turns texts into vectors; ``None`` (default) for keyword search only.
        tombstone_ttl: Seconds a delete is remembered after it happened (:mod:`primitives.memory.changes`).

    Raises:
        InvalidInputError: a size argument is not an int >= 1.
    """

    name = "in-memory"
    supports_ttl = True
    supports_vectors = False
    supports_working_memory = True
    supports_skill_stats = True
    supports_changes = True

    def __init__(
        self,
        *,
        maxsize: int = 100_000,
        default_ttls: Mapping[MemoryType, float | None] = DEFAULT_TTLS,
        working_memory_size: int = 50,
        max_sessions: int = 10_000,
        analyzer: Analyzer | None = None,
        index_dates: bool = True,
        indexed_metadata: Sequence[str] = INDEXED_METADATA_KEYS,
        k1: float = 1.2,
        b: float = 0.75,
        clock: Callable[[], float] = time.time,
        embedder: Embedder | None = None,
        tombstone_ttl: float = TOMBSTONE_TTL,
    ) -> None:
        self.maxsize = check_int(maxsize, "maxsize")
        self.working_memory_size = check_int(working_memory_size, "working_memory_size")
        check_int(max_sessions, "max_sessions")
        self.default_ttls = resolved_ttls(default_ttls)
        self.analyzer = analyzer or Analyzer()
        self.index_dates = index_dates
        self.indexed_metadata = tuple(indexed_metadata)
        self._clock = clock
        self._index = InvertedIndex(k1=k1, b=b)
        self._combinations: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
        self.embedder = embedder
        self.supports_vectors = embedder is not None  # type: ignore[misc]
        self._vectors: VectorIndex | None = None
        if embedder is not None:
            from primitives.memory.inmemory.vectors import VectorIndex  # numpy: only with an embedder

            self._vectors = VectorIndex(embedder.dims)
        self._records = RecordStore(self.maxsize, self._expires_at, clock, self._drop)
        self._sessions: TTLCache[Key, deque[Message]] = TTLCache(
            max_sessions, self.default_ttls[MemoryType.WORKING], timer=clock
        )
        self._skills = InMemorySkillLedger(ttl=self.default_ttls[MemoryType.SKILL], clock=clock)
        #: deletes, for changes() and so that put_if_newer never brings back a deleted record
        # key -> (deleted_at, logged µs), kept tombstone_ttl seconds after the delete arrived
        self._tombstones: TTLCache[Key, tuple[datetime, int]] = TTLCache(
            maxsize, check_ttl(tombstone_ttl, "tombstone_ttl"), timer=clock
        )
        # key -> when its last write arrived, µs (change order); kept only once changes() was
        # asked for (a store nobody exports pays nothing for it)
        self._logged: dict[Key, int] | None = None
        self._last_logged = 0

    # -- cache hooks -------------------------------------------------------------------------

    def _expires_at(self, record: MemoryRecord, now: float) -> float:
        """Expiry is ``ttl`` seconds after the record's ``updated_at`` (which ``add`` sets to now;
        a restored record keeps its own, so it expires when it would have)."""
        ttl = record.ttl if record.ttl is not None else self.default_ttls[record.memory_type]
        updated = record.updated_at
        return (updated.timestamp() if updated is not None else now) + ttl

    def _log(self, key: Key) -> int:
        """The arrival time of a write or delete now, µs, strictly increasing (change order)."""
        now = max(int(self._clock() * 1_000_000), self._last_logged + 1)
        self._last_logged = now
        return now

    def _drop(self, key: Key, record: MemoryRecord) -> None:
        if self._logged is not None:
            self._logged.pop(key, None)
        self._index.remove(key)
        if self._vectors is not None:
            self._vectors.remove(key)

    _unindex = _drop

    def _index_record(self, key: Key, record: MemoryRecord, vector: tuple[float, ...] | None) -> None:
        self._index.add_pairs(key, self.analyzer.terms(self.indexed_text(record)), self._tag_pairs(record))
        if self._vectors is not None and vector is not None:
            self._vectors.add(key, vector, self._tags(record))

    def _tag_pairs(self, record: MemoryRecord) -> tuple[tuple[str, str], ...]:
        """:meth:`_tags` as ``(field, value)`` pairs, one shared tuple per distinct combination
        (remembered for up to ``_TAG_COMBINATIONS`` combinations, then forgotten at once)."""
        combination = (record.namespace, record.memory_type, record.user_id, record.session_id, record.topics)
        pairs = self._combinations.get(combination)
        if pairs is None:
            if len(self._combinations) >= _TAG_COMBINATIONS:
                self._combinations.clear()
            pairs = self._combinations[combination] = tuple(
                (field, value) for field, values in self._tags(record).items() for value in values
            )
        return pairs

    async def _embed(self, records: Sequence[MemoryRecord]) -> list[tuple[float, ...] | None]:
        """Vectors for ``records`` (given ones checked, missing ones embedded), before anything
        is stored, so a failing embedder leaves the store unchanged."""
        if self.embedder is None:
            return [None] * len(records)
        return await check_embeddings(self.embedder, records, self.embedding_text)

    def embedding_text(self, record: MemoryRecord) -> str:
        """The text a record is embedded from; see :func:`embedding_text`."""
        return embedding_text(record)

    # -- indexing ----------------------------------------------------------------------------

    def indexed_text(self, record: MemoryRecord) -> str:
        """The text a record is indexed with: ``text``, then the ``indexed_metadata`` values, then
        the written-out ``created_at`` date, one per line."""
        parts = [record.text]
        metadata = record.metadata
        if metadata:
            for key in self.indexed_metadata:
                value = metadata.get(key)
                if isinstance(value, str):
                    parts.append(value)
        if self.index_dates and record.created_at is not None:
            parts.append(written_date(record.created_at))
        return "\n".join(parts)

    @staticmethod
    def _tags(record: MemoryRecord) -> dict[str, tuple[str, ...]]:
        tags: dict[str, tuple[str, ...]] = {
            "namespace": (record.namespace,),
            "memory_type": (record.memory_type.value,),
        }
        if record.user_id is not None:
            tags["user_id"] = (record.user_id,)
        if record.session_id is not None:
            tags["session_id"] = (record.session_id,)
        if record.topics:
            # a record may repeat a topic (kept as given); it is one tag value
            tags["topics"] = tuple(dict.fromkeys(record.topics)) if len(record.topics) > 1 else record.topics
        return tags

    # -- long-term memory --------------------------------------------------------------------

    async def _add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        vectors = await self._embed(records)
        store = self._records
        now_s = self._clock()
        store.expire(now_s)
        now = utc_from_timestamp(now_s)
        stored: list[MemoryRecord] = []
        canonical = self._index.canonical
        for record, vector in zip(records, vectors):
            key = (record.namespace, record.id)
            previous = store.peek(key)
            created_at = previous.created_at if previous is not None else (record.created_at or now)
            record = with_timestamps(record, created_at, now)  # type: ignore[arg-type]
            user_id = record.user_id
            if user_id is not None:
                # one string object per distinct user kept, not one per record
                object.__setattr__(record, "user_id", canonical("user_id", user_id))
            if vector is not None:
                stored.append(trusted_replace(record, embedding=vector))
                record = trusted_replace(record, embedding=None)  # the vector lives in the VectorIndex
            else:
                stored.append(record)
            if not store.set(key, record, now_s):
                # a ttl so small that it expired on arrival: the store dropped the old version
                self._unindex(key, record)
                continue
            self._index_record(key, record, vector)
            if self._logged is not None:
                self._logged[key] = self._log(key)
        return stored

    async def _put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        vectors = await self._embed(records)
        cache = self._records
        now_s = self._clock()
        cache.expire(now_s)
        written = 0
        for record, vector in zip(records, vectors):
            key = (record.namespace, record.id)
            current = cache.get(key)
            if current is not None and current.updated_at > record.updated_at:  # type: ignore[operator]
                continue
            tombstone = self._tombstones.get(key)
            if tombstone is not None and tombstone[0] >= record.updated_at:  # type: ignore[operator]
                continue  # deleted after this version was written
            if vector is not None:
                record = trusted_replace(record, embedding=None)
            if not cache.set(key, record, now_s):  # its ttl ran out before now: not stored
                self._unindex(key, record)
                continue
            self._index_record(key, record, vector)
            if self._logged is not None:
                self._logged[key] = self._log(key)
            written += 1
        return written

    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        cache = self._records
        cache.expire()
        deleted = 0
        for id, deleted_at in deletions.items():
            key = (namespace, id)
            current = cache.get(key)
            if current is not None and current.updated_at > deleted_at:  # type: ignore[operator]
                continue
            if current is not None:
                cache.pop(key)
                self._unindex(key, current)
                deleted += 1
            self._tombstone(key, deleted_at)
        return deleted

    async def _get(self, namespace: str, id: str) -> MemoryRecord | None:
        self._records.expire()
        key = (namespace, id)
        record = self._records.get(key)
        if record is not None and self._vectors is not None and record.embedding is None:
            vector = self._vectors.vector(key)
            if vector is not None:
                record = trusted_replace(record, embedding=vector)
        return record

    async def _delete(self, namespace: str, ids: list[str]) -> int:
        cache = self._records
        cache.expire()
        deleted = 0
        now = utc_from_timestamp(self._clock())
        for id in ids:
            key = (namespace, id)
            record = cache.pop(key)
            if record is not None:
                self._unindex(key, record)
                deleted += 1
            self._tombstone(key, now)
        return deleted

    def _tombstone(self, key: Key, at: datetime) -> None:
        known = self._tombstones.get(key)
        if known is None or at > known[0]:
            self._tombstones[key] = (at, self._log(key))

    async def _changes(self, after: tuple[int, str, str] | None, limit: int) -> list[ChangeEntry]:
        """O(store): every live record and kept tombstone is looked at (the in-process store is
        bounded by ``maxsize``)."""
        self._records.expire()
        self._tombstones.expire()
        logged = self._logged
        if logged is None:
            # first call: the records already here arrived in updated_at order, all before now
            logged = self._logged = {(r.namespace, r.id): micros(r.updated_at) for r in self._live_records()}  # type: ignore[arg-type]
            self._last_logged = max([self._last_logged, int(self._clock() * 1_000_000), *logged.values()])
        entries: list[tuple[int, str, str, Change]] = [
            (logged.get((r.namespace, r.id), 0), r.namespace, r.id, r) for r in self._live_records()
        ]
        entries += [(us, ns, id, Tombstone(ns, id, at)) for (ns, id), (at, us) in self._tombstones.items()]
        chosen = select_changes(entries, after, limit)
        if self._vectors is None:
            return chosen
        out = []
        for entry in chosen:
            change = entry.change
            if isinstance(change, MemoryRecord) and change.embedding is None:
                vector = self._vectors.vector((change.namespace, change.id))
                if vector is not None:
                    entry = ChangeEntry(entry.position, trusted_replace(change, embedding=vector))
            out.append(entry)
        return out

    async def _search(
        self, query: str, tag_filter: dict[str, tuple[str, ...]], limit: int, mode: str
    ) -> SearchResult:
        """Scores: BM25 (``>= 0``, unbounded; ties put the most recently written record first)
        in keyword mode, cosine similarity in vector mode, the fused score of
        :func:`~primitives.memory.embedding.fuse` in hybrid mode. A ``created_at`` range ranks
        every candidate the tags allow, then keeps those in the range (exact; O(candidates log
        candidates) instead of a top-``limit`` heap)."""
        tag_filter, time_range = split_filter(tag_filter)
        vector = None
        if mode != "keyword":
            assert self.embedder is not None
            vector = await self.embedder.embed_query(query)
        cache = self._records
        cache.expire()
        terms = self.analyzer.terms(query) if mode != "vector" else []
        everything = len(self._index) or 1
        if mode == "keyword":
            ranked = self._index.search(terms, tag_filter=tag_filter, limit=everything if time_range else limit) if terms else []
            ranked = self._in_range(ranked, time_range, limit)
        else:
            assert self._vectors is not None and vector is not None
            depth = limit if mode == "vector" else max(limit, HYBRID_CANDIDATES)
            by_vector = self._vectors.search(vector, tag_filter=tag_filter, limit=everything if time_range else depth)
            by_vector = self._in_range(by_vector, time_range, depth)
            if mode == "vector":
                ranked = by_vector
            else:
                by_keyword = self._index.search(terms, tag_filter=tag_filter, limit=everything if time_range else depth) if terms else []
                ranked = fuse(self._in_range(by_keyword, time_range, depth), by_vector, limit=limit)
        hits = []
        for key, score in ranked:
            record = cache.get(key)  # None only if it expired since the purge above
            if record is not None:
                hits.append(SearchHit(record, score))
        return SearchResult(hits, self.name)

    def _in_range(self, ranked: list[tuple[Key, float]], time_range: TimeRange | None, limit: int) -> list[tuple[Key, float]]:
        """The first ``limit`` of ``ranked`` whose record's ``created_at`` is in ``time_range``
        (all of the first ``limit`` when there is no range). Reads records without touching
        their LRU position."""
        if time_range is None:
            return ranked[:limit]
        out = []
        peek = self._records.peek
        for key, score in ranked:
            record = peek(key)
            if record is None:
                continue
            if time_range.contains(record.created_at):
                out.append((key, score))
                if len(out) >= limit:
                    break
        return out

    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        """O(1) per filter set; with a ``created_at`` range, O(records of the tags)."""
        self._records.expire()
        tag_filter, time_range = split_filter(tag_filter)
        if time_range is None:
            return self._index.count(tag_filter)
        return sum(
            1 for r in self._live_records()
            if time_range.contains(r.created_at) and all(
                any(v in tags.get(f, ()) for v in values) for tags in (self._tags(r),) for f, values in tag_filter.items()
            )
        )

    def _live_records(self) -> list[MemoryRecord]:
        """Every live record, least recently used first, without touching the LRU order (for tests
        and diagnostics; O(n))."""
        cache = self._records
        cache.expire()
        return cache.values()

    # -- working memory ----------------------------------------------------------------------

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        now = utc_from_timestamp(self._clock())
        key = (namespace, session_id)
        history = self._sessions.get(key)
        if history is None:
            history = deque(maxlen=self.working_memory_size)
        for message in messages:
            history.append(
                message if message.created_at is not None
                else Message(message.role, message.content, now, message.metadata)
            )
        self._sessions[key] = history  # re-setting refreshes the sliding TTL

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        history = self._sessions.get((namespace, session_id))
        if history is None:
            return []
        items = list(history)
        return items[-limit:] if limit is not None else items

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        self._sessions.pop((namespace, session_id), None)

    async def _record_skill_execution(self, name: str, success: bool, duration_s: float, namespace: str) -> SkillStats:
        """Kept ``default_ttls["skill"]`` seconds after the last execution."""
        return self._skills.record(name, success, duration_s, namespace)

    async def _skill_stats(self, name: str, namespace: str) -> SkillStats | None:
        return self._skills.stats(name, namespace)

    async def health(self) -> Health:
        self._records.expire()
        return Health(
            ok=True,
            backend=self.name,
            detail={
                "records": len(self._index),
                "maxsize": self.maxsize,
                "sessions": len(self._sessions),
                **(
                    {"embedding_model": self.embedder.model, "dims": self.embedder.dims}
                    if self.embedder is not None
                    else {}
                ),
            },
        )

    async def drop(self) -> None:
        """Forget every record, session and statistic."""
        self._records.clear()
        self._index.clear()
        if self._vectors is not None:
            self._vectors.clear()
        self._sessions.clear()
        self._skills = InMemorySkillLedger(ttl=self.default_ttls[MemoryType.SKILL], clock=self._clock)

    async def aclose(self) -> None:
        await self.drop()
