"""``AgentMemoryServerBackend``: memories in the Redis Agent Memory Server (AMS), through
agent-memory-client. Written and tested against agent-memory-server 0.15.2 and
agent-memory-client 0.14.0. Field mapping: :mod:`primitives.memory.ams_mapping`; connection,
auth, retry and error mapping: :mod:`primitives.memory.ams_transport`.

- **Long-term memory.** ``add``/``put_if_newer`` -> ``create_long_term_memory`` (batches of
  ``batch_size``; ``deduplicate=False`` unless configured: AMS deduplication may merge with an
  LLM); ``get`` -> ``get_long_term_memory``; ``delete`` -> ``delete_long_term_memories`` (count
  parsed from ``"ok, deleted N memories"``). ``search`` posts AMS's ``SearchRequest`` on the
  client's connection pool: the client's ``search_long_term_memory`` cannot send ``search_mode``
  (``keyword`` -> ``keyword``, ``vector`` -> ``semantic``, ``hybrid`` -> ``hybrid``), ``any``-of
  filters or ``recency_boost=false``.
- **Read your own writes: a bounded poll after each write.** AMS acknowledges a create before
  it indexes it (a background task embeds the text, then writes the hash). Measured on these
  2 cores, acknowledgement to searchable for one short record: p50 32 ms, p99 57 ms with no
  other load (``bench ams --no-auth``, ``index_lag_ms``); 136-385 ms, median 207 ms, with the
  machine loaded (10 creates, AMS's Redis polled directly); a 100-record request ~7-9 s (AMS
  indexed 10-14 records/s). ``add`` returns once every record reads back through AMS's search
  index with the ``updated_at`` it was written with (one filter-only search per 100 ids, by
  the ``mp-id:`` entity each record carries; see :meth:`_wait_indexed` for the schedule), at
  most ``index_timeout`` (+0.2 s a record) seconds, else :class:`BackendUnavailableError`: the
  resilient wrapper then keeps the write in its journal and replays it, where a write
  acknowledged but never indexed (embedding endpoint down) would otherwise be lost silently.
  Rejected: reading back through working memory (a session's own turns only, not long-term
  search) and a local overlay of recent writes (its hits would need AMS's normalised scores,
  which cannot be reproduced locally; an unindexed write would go unnoticed). With
  ``deduplicate=True`` nothing is polled (a deduplicated record may never appear under its
  id): writes are then only eventually visible.
- **Filters are enforced here too.** AMS drops the topics/namespace/memory-type filters of a
  ``semantic`` search that matches nothing (its "soft-filter fallback"), and RediSearch TAGs
  match case-insensitively: every hit is checked against the filter again, so a namespace is a
  hard boundary. Only letters and digits reach a keyword or hybrid query (stop words dropped,
  as AMS advises); a vector search sends the text, which is only embedded.
- **A 500 can poison a keep-alive connection:** a 5xx or a dropped connection is retried once
  on a new connection pool (every request here is idempotent; creates are upserts by id).
- **Errors name the fix:** 401/403 -> :class:`AuthenticationFailedError`, "Long-term memory is
  disabled" -> :class:`LongTermMemoryDisabledError`, refused, timed out, repeated 5xx ->
  :class:`BackendUnavailableError`.
- **Token auth is slow:** AMS 0.15.2 bcrypt-checks every stored token on every authenticated
  request, in its event loop: ~0.45 s a request here (5 ms without auth), one at a time. So
  this backend keeps requests few: ``add`` is 3 requests per 100 records, a recall 2.
- **Working memory:** one AMS session per ``session_id`` (no namespace or user):
  ``append_messages`` = ``get_or_create_working_memory`` + ``put_working_memory`` keeping the
  last ``working_memory_size`` messages (AMS would summarise a longer one with an LLM) and a
  sliding TTL, serialised per session in this process; ``get_messages`` is a plain ``GET`` (a
  read creates nothing); ``clear_session`` -> ``delete_working_memory``.
- **Limits:** ``put_if_newer``/``delete_if_older`` read then write (AMS has no conditional
  write): last writer wins for one writer per record. No per-record expiry on AMS
  (``supports_ttl`` False): a record whose lifetime has run out (its own ``ttl``, else its
  type's ``default_ttls`` entry, from ``updated_at``) is hidden from reads; AMS keeps the data. ``count`` pages AMS's filter-only listing (100 a page): exact, but
  O(n^2/100) rows server-side.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    InvalidRecordTypeError,
    LongTermMemoryDisabledError,
)
from primitives.memory import ams_mapping as amap
from primitives.memory.backend import (
    Health,
    MemoryBackend,
    SearchResult,
    check_limit,
    check_mode,
    check_query,
    check_restorable,
    normalize_filter,
)
from primitives.memory.record import DEFAULT_TTLS, MemoryRecord, MemoryType, Message, SearchHit, with_timestamps

try:
    from agent_memory_client.exceptions import MemoryNotFoundError
    from agent_memory_client.models import ClientMemoryRecord, WorkingMemory
    from ulid import ULID  # a dependency of agent-memory-client: its message ids

    from primitives.memory.ams_transport import AMSTransport, path_id
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Agent Memory Server backend needs agent-memory-client: "
        "python -m pip install 'memory-primitives[ams]'"
    ) from exc

__all__ = ["AgentMemoryServerBackend"]

_DELETED = re.compile(r"deleted (\d+)")
_PAGE = 100  # AMS SearchRequest.limit maximum


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class AgentMemoryServerBackend(MemoryBackend):
    """Long-term and working memory in an Agent Memory Server (see the module docstring).

    Args:
        url: The server's base URL, ``http(s)://host:port`` (``AGENT_MEMORY_SERVER_URL``).
        token: Bearer token for AMS token auth (``AGENT_MEMORY_SERVER_TOKEN``); ``None`` sends none.
        prefix: Partition of a shared AMS: prepended to record ids, namespaces and session ids
            (like a Redis key prefix); ``""`` (default) uses AMS's own values, interoperable with
            other AMS clients. Letters, digits and ``_.:-`` only.
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
        max_pages: Search pages of ``min(limit, 100)`` hits fetched at most to fill ``limit``
            after filtering here.
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
        max_pages: int = 10,
        default_ttls: Mapping[MemoryType, float | None] = DEFAULT_TTLS,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise ConfigurationError(
                f"AGENT_MEMORY_SERVER_URL {url!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8000"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.:\-]*", prefix):
            raise ConfigurationError(f"prefix {prefix!r} may only hold letters, digits and _.:-")
        if default_mode not in amap.AMS_MODES:
            raise ConfigurationError(f"default_mode must be one of {', '.join(amap.AMS_MODES)}, got {default_mode!r}")
        for arg, value in (("working_memory_size", working_memory_size), ("batch_size", batch_size),
                           ("max_pages", max_pages)):
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
        self.max_pages = max_pages
        self.default_ttls: dict[MemoryType, float | None] = {t: default_ttls.get(t) for t in MemoryType}
        #: Seconds the last write waited until AMS had indexed it (the read-your-writes poll).
        self.last_index_wait: float | None = None
        self._transport = AMSTransport(self.url, self.token, timeout=timeout, connect_timeout=connect_timeout)
        self._call = self._transport.call
        self._raw = self._transport.raw
        self._session_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._server_version: str | None = None

    async def _fetch(self, ams_id: str) -> dict[str, Any] | None:
        """The stored AMS record ``ams_id`` as JSON, or ``None``."""
        try:
            model = await self._call(lambda: self._transport.api.get_long_term_memory(path_id(ams_id)), missing_ok=True)
        except MemoryNotFoundError:
            return None
        return model.model_dump(mode="json")

    async def _fetch_records(self, ids: Sequence[str], *, live: bool = True) -> dict[str, MemoryRecord]:
        """Stored records among ``ids`` (seam ids; unexpired ones when ``live``): one search per 100 ids, by their
        ``mp-id:`` entity. (A record another AMS client wrote has no such entity and is not
        found here: ``add`` replaces it as new, the ``*_if_newer``/``*_if_older`` checks do not
        see it; ``get`` reads by id and finds it.)"""
        wanted = {self.prefix + amap.id_out(i): i for i in amap.unique(ids)}
        keys = list(wanted)
        now = _utcnow()
        found: dict[str, MemoryRecord] = {}
        for start in range(0, len(keys), _PAGE):
            for data in await self._search_page(amap.lookup_payload(keys[start:start + _PAGE], self.prefix)):
                record = amap.record_from_ams(data, self.prefix)
                if record is not None and wanted.get(data.get("id")) == record.id and not (live and amap.expired(record, now, self.default_ttls)):
                    found[record.id] = record
        return found

    # -- long-term memory: writes ------------------------------------------------------------

    def _check_records(self, records: Sequence[MemoryRecord], op: str) -> None:
        amap.check_batch(records, op, self.max_text_chars)

    async def _create(self, records: Sequence[MemoryRecord]) -> None:
        """Create ``records`` (timestamps set) in batches, then wait until AMS has indexed them."""
        loop = asyncio.get_running_loop()
        took = 0.0
        for start in range(0, len(records), self.batch_size):
            chunk = records[start:start + self.batch_size]
            models = [ClientMemoryRecord(**amap.record_to_ams(r, self.prefix)) for r in chunk]
            sent = loop.time()
            await self._call(lambda models=models: self._transport.api.create_long_term_memory(models, deduplicate=self.deduplicate))
            took = loop.time() - sent
        if not self.deduplicate:
            await self._wait_indexed(records, took)

    async def _wait_indexed(self, records: Sequence[MemoryRecord], request_time: float) -> None:
        """Poll until every record reads back at least as new as written: first after half the
        create's ``request_time`` (20..150 ms), then doubling up to 800 ms. With token auth a
        request holds AMS's event loop ~0.3-0.45 s, so early polls delay the indexing they wait
        for (a single-record add: 1.7 s polling at once, 1.05 s waiting 150 ms); without, a
        request costs ~3 ms and polling early is cheap. Deadline: ``index_timeout`` + 0.2 s a
        record (AMS indexed 10-14 records/s in ``bench ams`` here)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.index_timeout + 0.2 * len(records)
        waiting = {r.id: r.updated_at for r in records}
        delay = min(max(request_time / 2, 0.02), 0.15)
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.8)
            stored = await self._fetch_records(list(waiting), live=False)  # a short ttl may run out meanwhile
            waiting = {id: at for id, at in waiting.items() if id not in stored or stored[id].updated_at < at}  # type: ignore[operator]
            if not waiting:
                break
            if loop.time() >= deadline:
                raise BackendUnavailableError(
                    f"the Agent Memory Server at {self.url} acknowledged a write but had not indexed "
                    f"{len(waiting)} of its records after {loop.time() - start:.1f} s (e.g. {next(iter(waiting))!r}); "
                    "its embedding endpoint is probably failing (or returns vectors of another dims than "
                    "its index): check the server's log"
                )
        self.last_index_wait = loop.time() - start

    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """Insert or replace records; see :meth:`MemoryBackend.add`. Returns once AMS has indexed
        them (at most ``index_timeout`` s). A record's ``embedding`` is not stored (AMS embeds
        ``text`` itself), so the returned records have none.

        Raises:
            InvalidRecordTypeError: an item is not a ``MemoryRecord``; nothing stored.
            InvalidRecordError: a record with empty text (AMS refuses it); nothing stored.
            RecordTooLargeError: a text over ``max_text_chars``; nothing stored.
            BackendUnavailableError, AuthenticationFailedError, LongTermMemoryDisabledError.
        """
        self._check_records(records, "add")
        if not records:
            return []
        existing = await self._fetch_records([r.id for r in records])
        now = _utcnow()
        created = {id: r.created_at for id, r in existing.items()}
        stored = []
        for record in records:
            kept = created.setdefault(record.id, record.created_at or now)
            if record.embedding is not None:
                record = replace(record, embedding=None)
            stored.append(with_timestamps(record, kept, now))  # type: ignore[arg-type]
        await self._create(stored)
        return stored

    async def put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        check_restorable(records)
        self._check_records(records, "put_if_newer")
        now = _utcnow()
        live = [r for r in records if not amap.expired(r, now, self.default_ttls)]
        if not live:
            return 0
        stored = await self._fetch_records([r.id for r in live])
        newest: dict[str, MemoryRecord] = {}
        for record in live:  # a batch may hold several versions of one id: the newest wins
            rivals = [r for r in (stored.get(record.id), newest.get(record.id)) if r is not None]
            if any(r.updated_at > record.updated_at for r in rivals):  # type: ignore[operator]
                continue
            newest[record.id] = replace(record, embedding=None) if record.embedding is not None else record
        if newest:
            await self._create(list(newest.values()))
        return len(newest)

    async def delete(self, ids: Sequence[str]) -> int:
        if isinstance(ids, str):
            raise InvalidInputError("delete() takes a list of ids, got a single str")
        ams_ids = [self.prefix + amap.id_out(i) for i in amap.unique(ids)]
        deleted = 0
        for start in range(0, len(ams_ids), _PAGE):
            chunk = ams_ids[start:start + _PAGE]
            ack = await self._call(lambda chunk=chunk: self._transport.api.delete_long_term_memories(chunk))
            found = _DELETED.search(ack.status)
            if found is None:
                raise ConfigurationError(f"unexpected answer to a delete: {ack.status!r}; this backend expects AMS 0.15")
            deleted += int(found.group(1))
        return deleted

    async def delete_if_older(self, deletions: Mapping[str, datetime]) -> int:
        if not deletions:
            return 0
        stored = await self._fetch_records(list(deletions))
        doomed = [id for id, at in deletions.items() if id in stored and stored[id].updated_at <= at]  # type: ignore[operator]
        return await self.delete(doomed) if doomed else 0

    # -- long-term memory: reads -------------------------------------------------------------

    async def get(self, id: str) -> MemoryRecord | None:
        """The record ``id`` (exact, case-sensitive), or ``None``; an expired one is ``None``."""
        if not isinstance(id, str):
            raise InvalidInputError(f"id must be a str, got {type(id).__name__}")
        data = await self._fetch(self.prefix + amap.id_out(id))
        record = amap.record_from_ams(data, self.prefix) if data is not None else None
        if record is None or record.id != id or amap.expired(record, _utcnow(), self.default_ttls):
            return None
        return record

    async def _search_page(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        data = await self._call(lambda: self._raw(
            "POST", "/v1/long-term-memory/search", json=body, params={"optimize_query": "false"}))
        if data is None:
            raise ConfigurationError(f"no AMS search endpoint at {self.url}; is AGENT_MEMORY_SERVER_URL an AMS 0.15 API?")
        return list(data.get("memories") or ())

    async def search(
        self,
        query: str,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        mode: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> SearchResult:
        """AMS search; see :meth:`MemoryBackend.search`.

        Modes map to AMS ``search_mode``: ``keyword`` -> ``keyword`` (RediSearch BM25STD),
        ``vector`` -> ``semantic`` (cosine KNN), ``hybrid`` -> ``hybrid`` (AMS's weighted sum of
        both, ``hybrid_alpha``). A hybrid query of stop words only is searched by vector alone.
        Scores are AMS's normalised scores in ``[0, 1]`` (keyword and hybrid: relative to the best
        hit of the page; vector: ``1 - cosine distance``), higher is better; equal scores put the
        most recently written record first.

        Args:
            created_after, created_before: Inclusive bounds on ``created_at`` (aware datetimes).

        Raises:
            InvalidInputError, InvalidFilterError: see :meth:`MemoryBackend.search`; also a
                naive ``created_after``/``created_before``.
            BackendUnavailableError, AuthenticationFailedError, LongTermMemoryDisabledError.
        """
        check_query(query)
        check_limit(limit)
        mode = check_mode(mode) or self.default_mode
        tag_filter = normalize_filter(filter)
        for bound in (created_after, created_before):
            if bound is not None and (not isinstance(bound, datetime) or bound.tzinfo is None):
                raise InvalidInputError("created_after and created_before must be timezone-aware datetimes")
        if not query.strip():
            return SearchResult([], self.name)
        text = query if mode == "vector" else amap.words_for(query)
        if not text:
            if mode == "keyword":
                return SearchResult([], self.name)
            mode, text = "vector", query
        page = min(limit, _PAGE)
        now = _utcnow()
        hits: dict[str, SearchHit] = {}
        for number in range(self.max_pages):
            body = amap.search_payload(text, mode, tag_filter, limit=page, offset=number * page, prefix=self.prefix,
                                       created_after=created_after, created_before=created_before,
                                       hybrid_alpha=self.hybrid_alpha)
            memories = await self._search_page(body)
            kept = 0
            for data in memories:
                hit = amap.hit_from_ams(data, self.prefix, tag_filter, now, created_after, created_before, self.default_ttls)
                if hit is not None and hit.record.id not in hits:
                    hits[hit.record.id] = hit
                    kept += 1
            if len(hits) >= limit or len(memories) < page or (kept == 0 and mode == "vector"):
                break  # enough, exhausted, or AMS dropped filters that matched nothing
        ranked = sorted(hits.values(), key=lambda h: (h.score, h.record.updated_at), reverse=True)
        return SearchResult(ranked[:limit], self.name)

    async def _listing(self, tag_filter: Mapping[str, Sequence[str]]) -> AsyncIterator[MemoryRecord]:
        """Every live record matching ``tag_filter``, via AMS's filter-only listing (empty text)."""
        seen: set[str] = set()
        now = _utcnow()
        offset = 0
        while True:
            memories = await self._search_page(
                amap.search_payload("", "keyword", tag_filter, limit=_PAGE, offset=offset, prefix=self.prefix))
            for data in memories:
                hit = amap.hit_from_ams(data, self.prefix, tag_filter, now, default_ttls=self.default_ttls)
                if hit is not None and hit.record.id not in seen:
                    seen.add(hit.record.id)
                    yield hit.record
            if len(memories) < _PAGE:
                return
            offset += _PAGE

    async def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Live records matching ``filter``, counted by paging AMS's filter-only listing."""
        tag_filter = normalize_filter(filter)
        return sum([1 async for _ in self._listing(tag_filter)])

    async def drop(self) -> int:
        """Delete this partition: every record and working-memory session under ``prefix``.
        For throw-away stores (tests, benchmarks); refused without a prefix. Returns the
        number of records deleted."""
        if not self.prefix:
            raise ConfigurationError("drop() needs a prefix: without one it would empty the whole server")
        ids = [r.id async for r in self._listing({})]
        deleted = await self.delete(ids)
        offset = 0
        while True:
            params = {"limit": 100, "offset": offset}
            listing = await self._call(lambda params=params: self._raw("GET", "/v1/working-memory/", params=params))
            sessions = (listing or {}).get("sessions") or []
            for sid in sessions:
                if sid.startswith(self.prefix):
                    await self._call(lambda sid=sid: self._transport.api.delete_working_memory(path_id(sid)))
            if len(sessions) < 100:
                return deleted
            offset += 100

    # -- working memory ----------------------------------------------------------------------

    def _session(self, session_id: object) -> str:
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidInputError(f"session_id must be a non-empty str, got {session_id!r}")
        return self.prefix + amap.id_out(session_id)

    @staticmethod
    def _ours(memory: Any) -> bool:
        """A session read back is ours unless it has a namespace or user: AMS answers a
        missing key with a same-id session of another namespace or user (its key index)."""
        return not memory.get("namespace") and not memory.get("user_id")

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append to a session's working memory, keeping its last ``working_memory_size``.

        Raises:
            InvalidRecordTypeError: an item is not a ``Message``.
            InvalidInputError: a bad ``session_id``, or a message with empty content (AMS
                refuses those).
        """
        sid = self._session(session_id)
        for message in messages:
            if not isinstance(message, Message):
                raise InvalidRecordTypeError(f"append_messages() takes Message objects, got {type(message).__name__}")
            if not message.content.strip():
                raise InvalidInputError("the Agent Memory Server refuses a message with empty content")
        if not messages:
            return
        lock = self._session_locks.get(sid)
        if lock is None:
            lock = self._session_locks[sid] = asyncio.Lock()
        async with lock:
            _, current = await self._call(lambda: self._transport.api.get_or_create_working_memory(path_id(sid)))
            memory = current.model_dump(mode="json")
            now = _utcnow()
            update = amap.appended(memory if self._ours(memory) else {}, messages, [str(ULID()) for _ in messages],
                                   now, self.working_memory_size, self.working_memory_ttl)
            update = WorkingMemory(session_id=sid, **update)
            await self._call(lambda: self._transport.api.put_working_memory(path_id(sid), update))

    async def get_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The last ``limit`` (default ``working_memory_size``) messages, oldest first; a plain
        ``GET /v1/working-memory/{session}`` (no session is created by reading)."""
        sid = self._session(session_id)
        if limit is not None:
            check_limit(limit)
        memory = await self._call(lambda: self._raw("GET", f"/v1/working-memory/{path_id(sid)}"))
        if memory is None or not self._ours(memory):
            return []
        return amap.session_messages(memory)[-(limit or self.working_memory_size):]

    async def clear_session(self, session_id: str) -> None:
        sid = self._session(session_id)
        await self._call(lambda: self._transport.api.delete_working_memory(path_id(sid)))

    # -- health and lifecycle ----------------------------------------------------------------

    async def server_version(self) -> str | None:
        """The server's version from its OpenAPI document (``info.version``), or ``None`` when
        it does not publish one; read once and remembered."""
        if self._server_version is None:
            doc = await self._call(lambda: self._raw("GET", "/openapi.json"))
            version = ((doc or {}).get("info") or {}).get("version")
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
            await self._call(self._transport.api.health_check)
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
        """Write one probe record (namespace ``__memory_primitives_probe__``), wait until AMS has
        indexed it, delete it; returns the seconds that took. The only way to see over HTTP that
        AMS's embedding pipeline works: with an embedding model whose dims differ from its index
        (``REDISVL_VECTOR_DIMENSIONS``), RediSearch answers vector queries with no hits rather
        than an error, and leaves every write unindexed.

        Raises:
            BackendUnavailableError: the probe was not indexed within ``timeout`` seconds (or AMS
                is unreachable); AuthenticationFailedError, LongTermMemoryDisabledError.
        """
        probe = MemoryRecord(text="memory-primitives indexing probe", id=f"__probe__{ULID()}",
                             namespace="__memory_primitives_probe__")
        saved, self.index_timeout = self.index_timeout, timeout
        try:
            await self.add([probe])
            return self.last_index_wait or 0.0
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(
                f"the Agent Memory Server at {self.url} acknowledged a write but did not index it "
                f"within {timeout:g} s: its embedding endpoint fails, or the model's vectors have other "
                "dims than its index (REDISVL_VECTOR_DIMENSIONS); check its log"
            ) from exc
        finally:
            self.index_timeout = saved
            await self.delete([probe.id])

    async def aclose(self) -> None:
        await self._transport.aclose()
