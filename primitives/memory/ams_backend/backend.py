"""``AgentMemoryServerBackend``: memories in the Redis Agent Memory Server (AMS), over its HTTP API
on agent-memory-client's connection. Written and tested against agent-memory-server 0.15.2 and
agent-memory-client 0.14.0; the whole mapping, what the server does and what this backend does
about it: docs/ams-backend.md. Encoding of ids, TAG values and extra fields:
:mod:`~primitives.memory.ams_backend.codec`; records and search requests:
:mod:`~primitives.memory.ams_backend.mapping`; working memory:
:mod:`~primitives.memory.ams_backend.session`; connection, auth, one retry on a new pool, error
mapping: :mod:`~primitives.memory.ams_backend.transport`. Arguments arrive validated and
normalised (the public methods of :class:`~primitives.memory.backend.MemoryBackend`); the hooks
here only map and talk to the server.

- **Identity.** A record ``(namespace, id)`` is one AMS record whose id is derived injectively
  from the store's ``prefix``, the namespace and the id; working memory ``(namespace,
  session_id)`` is one AMS session, its id derived the same way.
- **Requests.** ``add``/``put_if_newer`` -> ``POST /v1/long-term-memory/`` (``deduplicate``
  off unless configured: it may call an LLM); ``get`` -> ``GET /v1/long-term-memory/{id}``;
  ``delete`` -> one lookup (AMS would count records whose lifetime ran out) + ``DELETE``;
  ``search`` -> ``POST /v1/long-term-memory/search`` with ``search_mode``, ``any``-of filters
  and ``recency_boost=false``. Answers are read as plain JSON and decoded by the mapping, never
  through the client's pydantic models (which raise their own errors on what they do not expect).
- **Read your own writes.** AMS acknowledges a create before it indexes it; ``add`` returns once
  every record reads back through the search index with the ``updated_at`` it was written with
  (:meth:`~AgentMemoryServerBackend._wait_indexed`), else :class:`BackendUnavailableError`, so
  the resilient wrapper keeps the write in its journal.
- **Filters are enforced here too**: AMS drops some filters of a search that matches nothing and
  matches TAGs case-insensitively, so every hit is checked again exactly.
- **Damaged records cost only themselves**: left out of searches, counts and listings (reported
  with :func:`~primitives.memory.backend.report_corrupt`, counted in ``SearchResult.skipped``);
  ``get`` raises :class:`~primitives.errors.CorruptRecordError` naming the AMS id. Other
  clients' records are not read.
- **Token auth is slow** on AMS 0.15.2 (~0.45 s a request here), so requests are few: ``add`` is
  3 requests per 100 records, a recall 2.
- **Limits:** ``put_if_newer``/``delete_if_older`` read then write (no conditional write on AMS):
  last writer wins for one writer per record. No per-record expiry on AMS (``supports_ttl``
  False): a record whose lifetime has run out (its ``ttl``, else its type's ``default_ttls``
  entry, from ``updated_at``) is hidden from reads, its data kept until deleted. A record's
  ``embedding`` is not stored (AMS embeds the text with its own model). ``count`` pages AMS's
  filter-only listing, 100 a page.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    LongTermMemoryDisabledError,
    RecordTooLargeError,
)
from primitives.memory.ams_backend import maintenance
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.ams_backend import session as wm
from primitives.memory.ams_backend.codec import MAX_PREFIX_CHARS, PREFIX_PATTERN
from primitives.memory.backend import Health, MemoryBackend, SearchResult, report_corrupt
from primitives.memory.record import (
    DEFAULT_TTLS,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
    trusted_replace,
    with_timestamps,
)

try:
    from ulid import ULID  # a dependency of agent-memory-client: its message ids

    from primitives.memory.ams_backend.transport import AMSTransport, path_id
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Agent Memory Server backend needs agent-memory-client: "
        "python -m pip install 'memory-primitives[ams]'"
    ) from exc

__all__ = ["AgentMemoryServerBackend"]

_DELETED = re.compile(r"deleted (\d+)")
_PAGE = 100  # AMS SearchRequest.limit maximum
#: Characters of ids per ``DELETE`` query string: AMS's server (uvicorn on h11) refuses a
#: request line and headers over 16 KiB.
_DELETE_CHARS = 8_000
Key = tuple[str, str]  # (namespace, id)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class AgentMemoryServerBackend(MemoryBackend):
    """Long-term and working memory in an Agent Memory Server (see the module docstring).

    Args:
        url: The server's base URL, ``http(s)://host:port`` (``AGENT_MEMORY_SERVER_URL``).
        token: Bearer token for AMS token auth (``AGENT_MEMORY_SERVER_TOKEN``); ``None`` sends none.
        prefix: Partition of a shared AMS: starts every AMS id, namespace and session id this
            store writes (like a Redis key prefix); ``""`` (default) for none. Lower-case
            letters, digits and ``_.:-`` only (AMS matches ids case-insensitively).
        default_mode: Search mode when ``search(mode=None)``: ``"hybrid"`` (default), ``"keyword"``
            or ``"vector"``.
        deduplicate: Ask AMS to deduplicate on create (may call an LLM; disables the read-back).
        working_memory_size: Messages kept per session.
        working_memory_ttl: Seconds a session lives after its last append (``None``: forever).
        timeout, connect_timeout: Seconds per request (30: agent-memory-client's default; AMS
            with token auth serialises requests, see ``bench ams``) / per connection attempt.
        index_timeout: Seconds a write waits to become readable before it counts as failed,
            plus 0.2 s per record written.
        batch_size: Records per create request (each request is one embedding batch on AMS).
        max_text_chars: Longest accepted ``text``. AMS embeds the whole text through its
            embedding endpoint, which refuses long input (the local server: 65,536 characters;
            OpenAI: 8,191 tokens, about 30,000 characters), and then indexes none of that
            request's records; a longer text is refused here instead. ``None``: no limit.
        hybrid_alpha: Weight of vector similarity in hybrid search (``None``: AMS's 0.7).
        index_dates: Add each record's written-out ``created_at`` date to the text AMS indexes and
            embeds, after its speaker and previous turn (as the other backends index them; see
            :func:`~primitives.memory.ams_backend.mapping.record_to_ams`).
        default_ttls: Seconds per memory type when a record's ``ttl`` is ``None`` (``None``: never
            expires); applied when reading, see the module's Limits.

    Raises:
        ConfigurationError: ``url`` is not an http(s) URL, or an argument is out of range.
    """

    name = "agent-memory-server"
    supports_ttl = False
    supports_vectors = True
    supports_working_memory = True

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        prefix: str = "",
        default_mode: str = "hybrid",
        deduplicate: bool = False,
        working_memory_size: int = 50,
        working_memory_ttl: float | None = 3600.0,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        index_timeout: float = 5.0,
        batch_size: int = 100,
        max_text_chars: int | None = 65_536,
        hybrid_alpha: float | None = None,
        default_ttls: Mapping[MemoryType, float | None] = DEFAULT_TTLS,
        index_dates: bool = True,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise ConfigurationError(
                f"AGENT_MEMORY_SERVER_URL {url!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8000"
            )
        if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > MAX_PREFIX_CHARS:
            raise ConfigurationError(
                f"prefix {prefix!r:.80} must be at most {MAX_PREFIX_CHARS} lower-case letters, digits and _.:- "
                "(AMS matches ids case-insensitively, and no TAG over 4,096 bytes)"
            )
        if default_mode not in amap.AMS_MODES:
            raise ConfigurationError(f"default_mode must be one of {', '.join(amap.AMS_MODES)}, got {default_mode!r}")
        for arg, value in (("working_memory_size", working_memory_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{arg} must be an int >= 1, got {value!r}")
        self.url = url.rstrip("/")
        self.token = token or None
        self.prefix = prefix
        self.default_mode = default_mode
        self.deduplicate = deduplicate
        self.working_memory_size = working_memory_size
        self.working_memory_ttl = working_memory_ttl
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.index_timeout = index_timeout
        self.batch_size = batch_size
        self.max_text_chars = max_text_chars
        self.hybrid_alpha = hybrid_alpha
        self.index_dates = index_dates
        self.default_ttls: dict[MemoryType, float | None] = {t: default_ttls.get(t) for t in MemoryType}
        #: Seconds the last write waited until AMS had indexed it (the read-your-writes poll).
        self.last_index_wait: float | None = None
        self._transport = AMSTransport(self.url, self.token, timeout=timeout, connect_timeout=connect_timeout)
        self._session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._server_version: str | None = None

    @property
    def default_search_mode(self) -> str:
        """``default_mode`` (``"hybrid"`` unless configured)."""
        return self.default_mode

    # -- requests ----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request through the transport (retry, error mapping); the JSON answer, ``None``
        on 404."""
        return await self._transport.call(lambda: self._transport.raw(method, path, **kwargs))

    async def _search_page(self, body: dict[str, Any]) -> list[Any]:
        data = await self._request("POST", "/v1/long-term-memory/search", json=body, params={"optimize_query": "false"})
        if data is None:
            raise ConfigurationError(f"no AMS search endpoint at {self.url}; is AGENT_MEMORY_SERVER_URL an AMS 0.15 API?")
        memories = data.get("memories") if isinstance(data, dict) else None
        if not isinstance(memories, list) and memories is not None:
            raise ConfigurationError(f"the search answer of {self.url} has no list of memories; this backend expects AMS 0.15")
        return memories or []

    def _key(self, namespace: str, id: str) -> str:
        return amap.ams_id(namespace, id, self.prefix)

    def _decode(self, data: Any, op: str | None, damaged: set[str]) -> MemoryRecord | None:
        """``data`` as this store's record; ``None`` for another client's, or a damaged one
        (reported once per key in ``damaged`` when ``op`` names the operation)."""
        try:
            if not isinstance(data, dict):
                raise CorruptRecordError("not an object", key="?", reason=f"a {type(data).__name__} among AMS's results")
            return amap.record_from_ams(data, self.prefix)
        except CorruptRecordError as exc:
            if exc.key not in damaged:
                damaged.add(exc.key)
                if op is not None:
                    report_corrupt(self.name, op, exc.key, exc.reason)
            return None

    async def _lookup(self, keys: Sequence[Key], *, live: bool = True,
                      op: str | None = None) -> tuple[dict[Key, MemoryRecord], set[Key]]:
        """The stored versions among ``keys`` (unexpired ones when ``live``), and the keys whose
        stored version is damaged: one search per 100 keys, by their ``mp-id:`` entity."""
        wanted = {self._key(*k): k for k in dict.fromkeys(keys)}
        ams_ids = list(wanted)
        now = _utcnow()
        found: dict[Key, MemoryRecord] = {}
        damaged: set[str] = set()
        for start in range(0, len(ams_ids), _PAGE):
            for data in await self._search_page(amap.lookup_payload(ams_ids[start:start + _PAGE], self.prefix)):
                record = self._decode(data, op, damaged)
                if record is None or wanted.get(data.get("id")) != (record.namespace, record.id):
                    continue  # another record whose entity matched case-insensitively
                if not (live and amap.expired(record, now, self.default_ttls)):
                    found[(record.namespace, record.id)] = record
        return found, {wanted[k] for k in damaged if k in wanted}

    # -- long-term memory: writes ------------------------------------------------------------

    def _check_storable(self, records: Sequence[MemoryRecord]) -> None:
        """Raises RecordTooLargeError for a text over ``max_text_chars``: AMS embeds the whole
        text and an endpoint refusing long input leaves the whole request unindexed."""
        limit = self.max_text_chars
        if limit is None:
            return
        for record in records:
            if len(record.text) > limit:
                raise RecordTooLargeError(
                    f"record {record.id!r} has {len(record.text)} characters, over max_text_chars={limit}: "
                    "the Agent Memory Server embeds the whole text and its embedding endpoint refuses longer "
                    "input; split the text; nothing stored"
                )

    async def _create(self, records: Sequence[MemoryRecord]) -> None:
        """Create ``records`` (timestamps set, one version per key) in batches, then wait until
        AMS has indexed them."""
        loop = asyncio.get_running_loop()
        took = 0.0
        for start in range(0, len(records), self.batch_size):
            body = {"memories": [amap.record_to_ams(r, self.prefix, index_dates=self.index_dates, max_chars=self.max_text_chars)
                                 for r in records[start:start + self.batch_size]],
                    "deduplicate": self.deduplicate}
            sent = loop.time()
            await self._request("POST", "/v1/long-term-memory/", json=body)
            took = loop.time() - sent
        if not self.deduplicate:
            await self._wait_indexed(records, took)

    async def _wait_indexed(self, records: Sequence[MemoryRecord], request_time: float) -> None:
        """Poll until every record reads back at least as new as written: first after half the
        create's ``request_time`` (20..150 ms), then doubling up to 800 ms. With token auth a
        request holds AMS's event loop ~0.3-0.45 s, so early polls delay the indexing they wait
        for; without, a request costs ~3 ms and polling early is cheap. A damaged stored version
        counts as not yet replaced. Deadline: ``index_timeout`` + 0.2 s a record (AMS indexed
        10-14 records/s in ``bench ams`` here)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.index_timeout + 0.2 * len(records)
        waiting = {(r.namespace, r.id): r.updated_at for r in records}
        delay = min(max(request_time / 2, 0.02), 0.15)
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.8)
            stored, _ = await self._lookup(list(waiting), live=False)  # a short ttl may run out meanwhile
            waiting = {k: at for k, at in waiting.items() if k not in stored or stored[k].updated_at < at}  # type: ignore[operator]
            if not waiting:
                break
            if loop.time() >= deadline:
                raise BackendUnavailableError(
                    f"the Agent Memory Server at {self.url} acknowledged a write but had not indexed "
                    f"{len(waiting)} of its records after {loop.time() - start:.1f} s (e.g. {next(iter(waiting))!r:.120}); "
                    "its embedding endpoint is probably failing (or returns vectors of another dims than "
                    "its index): check the server's log"
                )
        self.last_index_wait = loop.time() - start

    async def _add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """Returns once AMS has indexed the records (at most ``index_timeout`` s). A record's
        ``embedding`` is not stored (AMS embeds ``text`` itself), so the returned records have
        none. Of several versions of one record in a batch, the last is sent."""
        existing, _ = await self._lookup([(r.namespace, r.id) for r in records])
        now = _utcnow()
        created = {k: r.created_at for k, r in existing.items()}
        stored: list[MemoryRecord] = []
        latest: dict[Key, MemoryRecord] = {}
        for record in records:
            key = (record.namespace, record.id)
            kept = created.setdefault(key, record.created_at or now)
            if record.embedding is not None:
                record = trusted_replace(record, embedding=None)
            record = with_timestamps(record, kept, now)  # type: ignore[arg-type]
            stored.append(record)
            latest[key] = record
        await self._create(list(latest.values()))
        return stored

    async def _put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        """As the in-process backend, in order: a record is skipped when the version before it
        (stored, or earlier in the batch) is newer; one whose lifetime has already run out is
        not written and removes the older version it replaces."""
        now = _utcnow()
        current, _ = await self._lookup([(r.namespace, r.id) for r in records])
        stored_keys = set(current)
        writes: dict[Key, MemoryRecord] = {}
        deletes: set[Key] = set()
        written = 0
        for record in records:
            key = (record.namespace, record.id)
            previous = current.get(key)
            if previous is not None and previous.updated_at > record.updated_at:  # type: ignore[operator]
                continue
            if amap.expired(record, now, self.default_ttls):
                current.pop(key, None)
                writes.pop(key, None)
                if key in stored_keys:
                    deletes.add(key)
                continue
            current[key] = writes[key] = trusted_replace(record, embedding=None) if record.embedding is not None else record
            deletes.discard(key)
            written += 1
        if deletes:
            await self._delete_ams([self._key(*k) for k in deletes])
        if writes:
            await self._create(list(writes.values()))
        return written

    async def _delete_ams(self, ams_ids: Sequence[str]) -> int:
        """``DELETE /v1/long-term-memory`` in requests of at most 100 ids and
        :data:`_DELETE_CHARS` characters; AMS's count of deleted records."""
        deleted = 0
        chunk: list[str] = []
        size = 0
        lengths = [len(path_id(a)) + len("memory_ids=&") for a in ams_ids]  # as percent-encoded, at most
        for i, ams_id in enumerate(ams_ids):
            chunk.append(ams_id)
            size += lengths[i]
            last = i == len(ams_ids) - 1
            if last or len(chunk) == _PAGE or size + lengths[i + 1] > _DELETE_CHARS:
                ack = await self._request("DELETE", "/v1/long-term-memory", params=[("memory_ids", a) for a in chunk])
                found = _DELETED.search(str(ack.get("status")) if isinstance(ack, dict) else "")
                if found is None:
                    raise ConfigurationError(f"unexpected answer to a delete: {ack!r:.200}; this backend expects AMS 0.15")
                deleted += int(found.group(1))
                chunk, size = [], 0
        return deleted

    async def _delete(self, namespace: str, ids: list[str]) -> int:
        """Counts the live (and damaged) records among ``ids``, found by one lookup per 100;
        deletes every id given (an expired record's data too)."""
        keys = [(namespace, i) for i in ids]
        found, damaged = await self._lookup(keys)
        await self._delete_ams([self._key(*k) for k in keys])
        return sum(1 for k in keys if k in found or k in damaged)

    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        """A damaged stored version is not deleted (it cannot be shown to be older; it is
        reported)."""
        stored, _ = await self._lookup([(namespace, i) for i in deletions], live=False, op="delete_if_older")
        now = _utcnow()
        doomed = [k for k, r in stored.items() if r.updated_at <= deletions[k[1]]]  # type: ignore[operator]
        if doomed:
            await self._delete_ams([self._key(*k) for k in doomed])
        return sum(1 for k in doomed if not amap.expired(stored[k], now, self.default_ttls))

    # -- long-term memory: reads -------------------------------------------------------------

    async def _get(self, namespace: str, id: str) -> MemoryRecord | None:
        """``GET /v1/long-term-memory/{ams id}``; an expired record is ``None``.

        Raises:
            CorruptRecordError: the stored record does not decode (its AMS id is named).
        """
        key = self._key(namespace, id)
        data = await self._request("GET", f"/v1/long-term-memory/{path_id(key)}")
        if data is None:
            return None
        if not isinstance(data, dict):
            raise CorruptRecordError(f"AMS answered a read of {key!r} with a {type(data).__name__}",
                                     key=key, reason="not a record object")
        if data.get("id") != key:
            return None  # a record whose id differs only in case (AMS's TAG match)
        record = amap.record_from_ams(data, self.prefix)
        if record is None or amap.expired(record, _utcnow(), self.default_ttls):
            return None
        return record

    async def _search(
        self, query: str, tag_filter: dict[str, tuple[str, ...]], limit: int, mode: str
    ) -> SearchResult:
        """Modes map to AMS ``search_mode``: ``keyword`` -> ``keyword`` (RediSearch BM25STD),
        ``vector`` -> ``semantic`` (cosine KNN), ``hybrid`` -> ``hybrid`` (AMS's weighted sum of
        both, ``hybrid_alpha``). A hybrid query of stop words only is searched by vector alone.
        Scores are AMS's normalised scores in ``[0, 1]`` (keyword and hybrid: relative to the best
        hit of the page; vector: ``1 - cosine distance``), higher is better; equal scores put the
        most recently written record first. Pages of ``min(limit, 100)`` until ``limit`` hits
        pass the exact filter, the results run out, or a page holds nothing the server's filter
        admits (its soft-filter fallback)."""
        text = query if mode == "vector" else amap.words_for(query)
        if not text:
            if mode == "keyword":
                return SearchResult([], self.name)
            mode, text = "vector", query
        page = min(limit, _PAGE)
        now = _utcnow()
        hits: dict[Key, SearchHit] = {}
        damaged: set[str] = set()
        offset = 0
        while True:
            body = amap.search_payload(text, mode, tag_filter, limit=page, offset=offset, prefix=self.prefix,
                                       hybrid_alpha=self.hybrid_alpha)
            memories = await self._search_page(body)
            admitted = False
            for data in memories:
                admitted = admitted or (isinstance(data, dict) and amap.within_server_filter(data, tag_filter, self.prefix))
                record = self._decode(data, "search", damaged)
                if (record is None or (record.namespace, record.id) in hits
                        or amap.expired(record, now, self.default_ttls) or not amap.matches(record, tag_filter)):
                    continue
                hits[(record.namespace, record.id)] = SearchHit(record, amap.hit_score(data))
            if len(hits) >= limit or len(memories) < page or not admitted:
                break
            offset += page
        ranked = sorted(hits.values(), key=lambda h: (h.score, h.record.updated_at), reverse=True)
        return SearchResult(ranked[:limit], self.name, skipped=len(damaged))

    async def _listing(self, tag_filter: Mapping[str, Sequence[str]], op: str) -> AsyncIterator[MemoryRecord]:
        """Every live record matching ``tag_filter``, via AMS's filter-only listing (empty
        text); damaged ones are reported under ``op`` and left out."""
        seen: set[Key] = set()
        damaged: set[str] = set()
        now = _utcnow()
        offset = 0
        while True:
            memories = await self._search_page(
                amap.search_payload("", "keyword", tag_filter, limit=_PAGE, offset=offset, prefix=self.prefix))
            for data in memories:
                record = self._decode(data, op, damaged)
                if (record is None or (record.namespace, record.id) in seen
                        or amap.expired(record, now, self.default_ttls) or not amap.matches(record, tag_filter)):
                    continue
                seen.add((record.namespace, record.id))
                yield record
            if len(memories) < _PAGE:
                return
            offset += _PAGE

    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        """Counted by paging AMS's filter-only listing."""
        return sum([1 async for _ in self._listing(tag_filter, "count")])

    async def drop(self) -> int:
        """Delete this partition (for throw-away stores: tests, benchmarks); see
        :func:`~primitives.memory.ams_backend.maintenance.drop`."""
        return await maintenance.drop(self)

    async def scan(self, max_records: int = 1_000) -> maintenance.Scan:
        """Find damaged records among the first ``max_records`` of this partition (for
        ``doctor``); see :func:`~primitives.memory.ams_backend.maintenance.scan`."""
        return await maintenance.scan(self, max_records)

    # -- working memory ----------------------------------------------------------------------

    async def _session(self, sid: str) -> dict[str, Any] | None:
        """The stored session ``sid`` (a plain ``GET``: reading creates nothing), or ``None``
        when there is none of ours."""
        memory = await self._request("GET", f"/v1/working-memory/{path_id(sid)}")
        return memory if wm.is_ours(memory, sid) else None

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        """Read the session, append, write it back keeping the last ``working_memory_size``
        messages (AMS would summarise a longer one with an LLM) with a sliding
        ``working_memory_ttl``; serialised per session in this process."""
        sid = self._key(namespace, session_id)
        lock = self._session_locks.get(sid)
        if lock is None:
            lock = self._session_locks[sid] = asyncio.Lock()
        async with lock:
            memory = await self._session(sid) or {}
            body = wm.appended(memory, messages, [str(ULID()) for _ in messages], _utcnow(),
                               self.working_memory_size, self.working_memory_ttl)
            if await self._request("PUT", f"/v1/working-memory/{path_id(sid)}", json=body) is None:
                raise ConfigurationError(f"no AMS working-memory endpoint at {self.url}; is AGENT_MEMORY_SERVER_URL an AMS 0.15 API?")

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        sid = self._key(namespace, session_id)
        memory = await self._session(sid)
        if memory is None:
            return []
        messages, damaged = wm.session_messages(memory, sid)
        for exc in damaged:
            report_corrupt(self.name, "get_messages", exc.key, exc.reason)
        return messages[-limit:] if limit is not None else messages

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        """Deletes only a session of ours: AMS's delete of a missing key would resolve the id
        through its index to a session of another namespace or user and delete that."""
        sid = self._key(namespace, session_id)
        if await self._session(sid) is not None:
            await self._request("DELETE", f"/v1/working-memory/{path_id(sid)}")

    # -- health and lifecycle ----------------------------------------------------------------

    async def server_version(self) -> str | None:
        """The server's version from its OpenAPI document (``info.version``), or ``None`` when
        it does not publish one; read once and remembered."""
        if self._server_version is None:
            doc = await self._request("GET", "/openapi.json")
            info = doc.get("info") if isinstance(doc, dict) else None
            version = info.get("version") if isinstance(info, dict) else None
            self._server_version = str(version) if version else None
        return self._server_version

    async def health(self) -> Health:
        """Reachability (``/v1/health``), server version, token and long-term memory (a
        one-record listing), and vector search (a one-hit semantic search, which needs the
        server's embedding endpoint and an index of its model's dims). Never raises for an
        unreachable or misconfigured server.

        ``detail``: ``url``, ``server_version``, ``auth`` (``"ok"``/``"refused"``),
        ``long_term_memory`` (bool), ``vector_search`` (bool), ``error``/``error_type`` when not ok.
        Read-only, so it cannot see an embedding model whose dims differ from AMS's index (AMS
        publishes neither over HTTP, and such vector queries just find nothing): that takes a
        write, :meth:`probe_indexing`.
        """
        detail: dict[str, Any] = {"url": self.url, "reachable": False}
        try:
            await self._request("GET", "/v1/health")
            detail.update(reachable=True, server_version=await self.server_version())
            await self._search_page(amap.search_payload("", "keyword", {}, limit=1, offset=0, prefix=self.prefix))
            detail.update(auth="ok", long_term_memory=True, vector_search=False)
            await self._search_page(amap.search_payload("memory health probe", "vector", {}, limit=1, offset=0))
            detail["vector_search"] = True
        except (BackendUnavailableError, ConfigurationError) as exc:
            if isinstance(exc, AuthenticationFailedError):
                detail["auth"] = "refused"
            if isinstance(exc, LongTermMemoryDisabledError):
                detail["long_term_memory"] = False
            detail.update(error=str(exc), error_type=type(exc).__name__)
            return Health(ok=False, backend=self.name, detail=detail)
        return Health(ok=True, backend=self.name, detail=detail)

    async def probe_indexing(self, timeout: float = 5.0) -> float:
        """Write, wait for and delete one probe record; the seconds until it was indexed (for
        ``doctor``); see :func:`~primitives.memory.ams_backend.maintenance.probe_indexing`.

        Raises:
            BackendUnavailableError: not indexed within ``timeout`` s (or AMS unreachable).
        """
        return await maintenance.probe_indexing(self, f"__probe__{ULID()}", timeout)

    async def aclose(self) -> None:
        await self._transport.aclose()
