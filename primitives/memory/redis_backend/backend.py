"""``RedisBackend``: memories in Redis, searched with the Query Engine (RediSearch).

Records are hashes under ``{prefix}rec:{id}`` (see docs/redis-backend.md for why hashes and not
JSON), indexed by one RediSearch index (:class:`~primitives.memory.redis_schema.IndexSpec`).
Working memory is a list per session under ``{prefix}wm:{session_id}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from primitives.embeddings.base import Embedder
from primitives.errors import (
    BackendUnavailableError,
    ConfigurationError,
    DimensionMismatchError,
    IndexSchemaMismatchError,
    InvalidInputError,
    InvalidRecordTypeError,
    QueryEngineUnavailableError,
    RecordTooLargeError,
)
from primitives.memory import redis_skills
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
from primitives.memory.embedding import (
    HYBRID_CANDIDATES,
    check_embeddings,
    embedding_text,
    fuse,
    require_embedder,
)
from primitives.memory.record import (
    DEFAULT_NAMESPACE,
    DEFAULT_TTLS,
    INDEXED_METADATA_KEYS,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
    trusted_record,
    with_timestamps,
    written_date,
)
from primitives.memory.redis_query import query_words, render_query
from primitives.memory.redis_schema import TAG_SEPARATOR, IndexSpec, pairs_to_dict
from primitives.memory.skills import SkillStats, check_skill_execution, check_skill_name

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from primitives.redis_connection import redis_errors_mapped
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Redis backend needs redis-py: python -m pip install 'memory-primitives[redis]'"
    ) from exc

__all__ = ["RedisBackend"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EMPTY_METADATA: Mapping[str, Any] = MappingProxyType({})
_MEMORY_TYPES = {t.value: t for t in MemoryType}
# created_at/updated_at are indexed NUMERIC seconds; RediSearch returns such fields rounded, so the
# exact microsecond values travel in the unindexed *_us fields.
_RETURN = ("id", "text", "user_id", "session_id", "namespace", "memory_type", "topics",
           "metadata", "created_at_us", "updated_at_us", "ttl")
_START_FIX = "start one with: memory-primitives redis start"

# Upsert of one record hash (KEYS[1]) that keeps a stored created_at. ARGV[1]: pexpire ms (0:
# none); ARGV[2]: a JSON array [field, value, ...] starting with created_at_us and created_at (one
# argument instead of two dozen: packing arguments is most of redis-py's client-side cost; an
# array keeps the fields in a fixed order); ARGV[3]: the float32 vector bytes, or empty (binary,
# so not inside the JSON). Returns the created_at_us the record has now.
_UPSERT = """
local fields = cjson.decode(ARGV[2])
local old = redis.call('HMGET', KEYS[1], 'created_at_us', 'created_at')
if old[1] then fields[2] = old[1]; fields[4] = old[2] end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'vector', ARGV[3]) end
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return fields[2]
"""

# HGETALL of KEYS[1] with the binary float32 'vector' field turned into a JSON 'embedding' (the
# client decodes replies as UTF-8, which raw float bytes are not).
_GET = """
local h = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #h, 2 do
  if h[i] == 'vector' then
    local v = h[i + 1]
    local floats = {}
    for j = 0, #v / 4 - 1 do floats[j + 1] = struct.unpack('<f', v, j * 4 + 1) end
    out[#out + 1] = 'embedding'
    out[#out + 1] = cjson.encode(floats)
  else
    out[#out + 1] = h[i]
    out[#out + 1] = h[i + 1]
  end
end
return out
"""

# Last-writer-wins write of one record hash (KEYS[1]); ARGV: updated_at_us, pexpire ms (0: none),
# then field/value pairs. An equal updated_at rewrites, so replays are idempotent.
_PUT_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'updated_at_us')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# Delete KEYS[1] unless it was written after ARGV[1] (microseconds since the epoch).
_DELETE_IF_OLDER = """
local current = redis.call('HGET', KEYS[1], 'updated_at_us')
if not current or tonumber(current) > tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _ts(dt: datetime) -> str:
    """Seconds since the epoch with microseconds, as a decimal string (for NUMERIC fields)."""
    delta = dt - _EPOCH
    return f"{delta.days * 86400 + delta.seconds}.{delta.microseconds:06d}"


def _us(dt: datetime) -> str:
    """Exact microseconds since the epoch."""
    delta = dt - _EPOCH
    return str((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _dt(raw: str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(raw))


def _pack(vector: Sequence[float]) -> bytes:
    """A vector as little-endian float32 bytes (RediSearch's FLOAT32 blob)."""
    return struct.pack(f"<{len(vector)}f", *vector)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (``SCAN MATCH``)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisBackend(MemoryBackend):
    """Memories in Redis with RediSearch full-text ranking (BM25, ``SCORER BM25STD``).

    The connection is opened lazily: the first call probes the server (``FT._LIST``: a server
    without the Query Engine, such as plain Redis 7 or a managed service without it, is refused
    with :class:`QueryEngineUnavailableError`; nothing is kept in Redis and searched elsewhere,
    because a store whose search silently lives in one process is not what ``REDIS_URL`` promises),
    then creates the index if it is missing or checks an existing one against the configuration.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS.
        prefix: Key prefix; records live under ``{prefix}rec:``, working memory under ``{prefix}wm:``.
        index_name: RediSearch index name; ``{prefix}idx`` by default.
        default_ttls: Seconds per memory type when a record's ``ttl`` is ``None`` (``None`` or a
            missing type: no expiry).
        working_memory_size: Messages kept per session.
        max_record_bytes: Largest accepted record (UTF-8 text plus metadata JSON), in bytes.
        max_connections: Size of the connection pool.
        socket_timeout, socket_connect_timeout: Seconds before a command or a connect gives up.
        index_dates: Index each record's written-out ``created_at`` date (as in-process).
        embedder: Turns texts into vectors (``None``: keyword search only). With one, the index
            gets a ``vector`` field (HNSW, FLOAT32, COSINE, ``embedder.dims``), each record is
            embedded on write from :func:`~primitives.memory.embedding.embedding_text` and stored
            as float32 bytes, and ``search(mode=)`` takes ``"vector"`` (KNN with the same TAG
            pre-filter) and ``"hybrid"`` (BM25 and KNN in one round trip, fused client-side; the
            default). The model and dims are recorded under ``{prefix}embedding``; a store built
            with another model or dims is refused with :class:`DimensionMismatchError` until
            ``memory-primitives index migrate`` re-embeds it.

    Raises:
        ConfigurationError: ``url`` is malformed (the message shows the accepted form).
    """

    name = "redis"
    supports_ttl = True
    supports_vectors = False
    supports_working_memory = True
    supports_skill_stats = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "memory:",
        index_name: str | None = None,
        default_ttls: Mapping[MemoryType, float | None] = DEFAULT_TTLS,
        working_memory_size: int = 50,
        max_record_bytes: int = 16 * 2**20,
        max_connections: int = 50,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        index_dates: bool = True,
        embedder: Embedder | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"REDIS_URL {url!r} is not a Redis URL; expected "
                "redis://[[user]:password@]host[:port][/db] or rediss://... for TLS"
            )
        try:
            self._client = aioredis.from_url(
                url,
                decode_responses=True,
                protocol=2,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                # one immediate retry on a fresh connection (a pooled socket may predate a
                # server restart), no backoff: an outage is the circuit breaker's business
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise ConfigurationError(f"REDIS_URL {url!r} is malformed: {exc}") from exc
        self.prefix = prefix
        self.embedder = embedder
        self.supports_vectors = embedder is not None  # type: ignore[misc]
        self.spec = IndexSpec(
            name=index_name or f"{prefix}idx",
            prefix=f"{prefix}rec:",
            dims=embedder.dims if embedder is not None else None,
        )
        self.default_ttls = {
            t: (math.inf if default_ttls.get(t) is None else float(default_ttls[t]))  # type: ignore[arg-type]
            for t in MemoryType
        }
        self.working_memory_size = working_memory_size
        self.max_record_bytes = max_record_bytes
        self.index_dates = index_dates
        self.socket_connect_timeout = socket_connect_timeout
        self._ready = False
        self._ready_lock = asyncio.Lock()

    # -- connection, probing, index ----------------------------------------------------------

    def _errors(self) -> AbstractAsyncContextManager[None]:
        """Map redis-py's exceptions to this package's, naming the fix
        (:func:`~primitives.redis_connection.redis_errors_mapped`)."""
        return redis_errors_mapped("Redis", url_name="REDIS_URL", unreachable_fix=_START_FIX)

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            async with self._errors():
                try:
                    await self._client.execute_command("FT._LIST")
                except redis_errors.ResponseError as exc:
                    if "unknown command" in str(exc).lower():
                        raise QueryEngineUnavailableError(
                            "this Redis has no Query Engine (FT.* commands are unknown), so it "
                            "cannot search memories. Use Redis 8 or Redis Stack, or run a local "
                            f"one ({_START_FIX}), or set MEMORY_BACKEND=inmemory"
                        ) from exc
                    raise
                info = await self.index_info()
                if info is None:
                    await self._create_index()
                else:
                    problems = self.spec.differences(info)
                    vector_problems = [p for p in problems if "field vector " in p]
                    if vector_problems and len(vector_problems) == len(problems):
                        raise DimensionMismatchError(
                            f"index {self.spec.name!r}: {'; '.join(vector_problems)} "
                            f"({self.embedder.model if self.embedder else 'no embedder'}). "
                            "Re-embed every record and rebuild the index (records are kept): "
                            f"memory-primitives index migrate --prefix {self.prefix}"
                        )
                    if problems:
                        raise IndexSchemaMismatchError(
                            f"index {self.spec.name!r} exists with a different schema: "
                            f"{'; '.join(problems)}. Expected: {self.spec.describe()}. Migrate "
                            "(drops the index, keeps every record, re-indexes them): "
                            f"memory-primitives index migrate --prefix {self.prefix}"
                        )
                await self._check_embedding_model()
            self._ready = True

    def _meta_key(self) -> str:
        return f"{self.prefix}embedding"

    async def _check_embedding_model(self) -> None:
        """Record the embedder's model and dims on first use; refuse another model later (same
        dims but another model gives vectors that cannot be compared)."""
        if self.embedder is None:
            return
        meta = await self._client.hgetall(self._meta_key())
        model, dims = meta.get("model"), meta.get("dims")
        if model is None:
            await self._client.hset(
                self._meta_key(), mapping={"model": self.embedder.model, "dims": str(self.embedder.dims)}
            )
        elif model != self.embedder.model or dims != str(self.embedder.dims):
            raise DimensionMismatchError(
                f"the store under {self.prefix!r} was embedded with {model} ({dims} dims) but the "
                f"embedder is {self.embedder.model} ({self.embedder.dims} dims); re-embed every "
                f"record (records are kept): memory-primitives index migrate --prefix {self.prefix}"
            )

    async def _create_index(self) -> None:
        try:
            await self._client.execute_command(*self.spec.create_args())
        except redis_errors.ResponseError as exc:
            if "already exists" not in str(exc).lower():  # a concurrent creator won the race
                raise ConfigurationError(f"Redis refused FT.CREATE for {self.spec.name!r}: {exc}") from exc

    async def index_info(self) -> dict[str, Any] | None:
        """``FT.INFO`` of the index as a dict, or ``None`` when it does not exist."""
        try:
            raw = await self._client.execute_command("FT.INFO", self.spec.name)
        except redis_errors.ResponseError as exc:
            text = str(exc).lower()
            if "unknown index" in text or "no such index" in text:
                return None
            raise
        return pairs_to_dict(raw)

    async def migrate_index(self, *, batch_size: int = 256) -> int:
        """Drop the index (never the records: ``FT.DROPINDEX`` without ``DD``) and create it
        with this configuration's schema; Redis then re-indexes every record under the prefix in
        the background (``FT.INFO`` ``indexing`` is 1 until it is done).

        With an embedder, every record is re-embedded first (``SCAN`` in batches of
        ``batch_size``, one embedder call and one pipeline per batch) and the store is marked as
        embedded with this model. Records written meanwhile by other clients are embedded by
        them; a record deleted meanwhile is skipped.

        Returns:
            How many records were re-embedded (0 without an embedder).
        """
        reembedded = 0
        async with self._errors():
            if await self.index_info() is not None:
                await self._client.execute_command("FT.DROPINDEX", self.spec.name)
            if self.embedder is not None:
                reembedded = await self._reembed(batch_size)
                await self._client.hset(
                    self._meta_key(), mapping={"model": self.embedder.model, "dims": str(self.embedder.dims)}
                )
            await self._create_index()
        self._ready = False
        return reembedded

    async def _reembed(self, batch_size: int) -> int:
        assert self.embedder is not None
        done = 0
        keys: list[str] = []

        async def flush() -> int:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, "id", "text", "metadata")
                rows = await pipe.execute()
            live = [(key, MemoryRecord(text=row[1], id=row[0], metadata=json.loads(row[2] or "{}")))
                    for key, row in zip(keys, rows) if row[0] is not None and row[1]]
            if not live:
                return 0
            vectors = await self.embedder.embed_tuples([embedding_text(r) for _, r in live])  # type: ignore[union-attr]
            async with self._client.pipeline(transaction=False) as pipe:
                for (key, _), vector in zip(live, vectors):
                    pipe.hset(key, "vector", _pack(vector))
                await pipe.execute()
            return len(live)

        async for key in self._client.scan_iter(match=f"{_glob_escape(self.spec.prefix)}*", count=500):
            keys.append(key)
            if len(keys) >= batch_size:
                done += await flush()
                keys = []
        if keys:
            done += await flush()
        return done

    async def drop(self) -> None:
        """Delete this store: the index with every record under the prefix (``FT.DROPINDEX ...
        DD``), the record of its embedding model, and every working-memory list (``SCAN`` + ``UNLINK`` in batches, never ``KEYS``).
        For throw-away stores (evaluations, tests); irreversible."""
        async with self._errors():
            if await self.index_info() is not None:
                await self._client.execute_command("FT.DROPINDEX", self.spec.name, "DD")
            batch: list[str] = []
            async for key in self._client.scan_iter(match=f"{_glob_escape(self.prefix)}wm:*", count=500):
                batch.append(key)
                if len(batch) == 500:
                    await self._client.unlink(*batch)
                    batch = []
            if batch:
                await self._client.unlink(*batch)
            await self._client.unlink(self._meta_key())
        self._ready = False

    # -- encoding ----------------------------------------------------------------------------

    def _key(self, id: str) -> str:
        return f"{self.spec.prefix}{id}"

    def _effective_ttl(self, record: MemoryRecord) -> float:
        return record.ttl if record.ttl is not None else self.default_ttls[record.memory_type]

    def _encode(self, record: MemoryRecord) -> dict[str, str]:
        fields = {
            "id": record.id,
            "text": record.text,
            "namespace": record.namespace,
            "memory_type": record.memory_type.value,
            "metadata": json.dumps(dict(record.metadata), ensure_ascii=False),
            "created_at": _ts(record.created_at),  # type: ignore[arg-type]
            "updated_at": _ts(record.updated_at),  # type: ignore[arg-type]
            "created_at_us": _us(record.created_at),  # type: ignore[arg-type]
            "updated_at_us": _us(record.updated_at),  # type: ignore[arg-type]
        }
        if record.user_id is not None:
            fields["user_id"] = record.user_id
        if record.session_id is not None:
            fields["session_id"] = record.session_id
        if record.topics:
            fields["topics"] = TAG_SEPARATOR.join(record.topics)
        if record.ttl is not None:
            fields["ttl"] = repr(float(record.ttl))
        for key in INDEXED_METADATA_KEYS:
            value = record.metadata.get(key)
            if isinstance(value, str):
                fields[key] = value
        if self.index_dates and record.created_at is not None:
            fields["date"] = written_date(record.created_at)
        return fields

    @staticmethod
    def _decode(fields: Mapping[str, str]) -> MemoryRecord:
        """A stored hash back to a record (trusted: it was validated on the way in)."""
        topics = fields.get("topics")
        embedding = fields.get("embedding")
        ttl = fields.get("ttl")
        metadata = fields.get("metadata")
        return trusted_record(
            id=fields["id"],
            text=fields.get("text", ""),
            user_id=fields.get("user_id"),
            session_id=fields.get("session_id"),
            namespace=fields["namespace"],
            memory_type=_MEMORY_TYPES[fields["memory_type"]],
            topics=tuple(topics.split(TAG_SEPARATOR)) if topics else (),
            metadata=MappingProxyType(json.loads(metadata)) if metadata and metadata != "{}" else _EMPTY_METADATA,
            embedding=tuple(json.loads(embedding)) if embedding else None,
            created_at=_dt(fields["created_at_us"]),
            updated_at=_dt(fields["updated_at_us"]),
            ttl=float(ttl) if ttl is not None else None,
        )

    async def _vectors(self, records: Sequence[MemoryRecord]) -> list[bytes]:
        """float32 bytes per record: its embedding (checked) or the embedder's; records keep a
        given embedding even without an embedder (then it is stored but not indexed)."""
        if self.embedder is not None:
            return [_pack(v) for v in await check_embeddings(self.embedder, records, embedding_text)]
        return [_pack(r.embedding) if r.embedding is not None else b"" for r in records]

    # -- long-term memory --------------------------------------------------------------------

    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        for record in records:
            if not isinstance(record, MemoryRecord):
                raise InvalidRecordTypeError(
                    f"add() takes MemoryRecord objects, got {type(record).__name__}; nothing stored"
                )
            size = len(record.text.encode()) + len(json.dumps(dict(record.metadata)).encode())
            if size > self.max_record_bytes:
                raise RecordTooLargeError(
                    f"record {record.id!r} is {size} bytes, over max_record_bytes="
                    f"{self.max_record_bytes}; split the text or raise the limit; nothing stored"
                )
        if not records:
            return []
        await self._ensure_ready()
        vectors = await self._vectors(records)
        now = datetime.now(timezone.utc)
        stamped = [with_timestamps(r, r.created_at or now, now) for r in records]
        async with self._errors():
            upsert = self._client.register_script(_UPSERT)
            async with self._client.pipeline(transaction=False) as pipe:
                for record, vector in zip(stamped, vectors):
                    ttl = self._effective_ttl(record)
                    fields = self._encode(record)
                    pairs = ["created_at_us", fields.pop("created_at_us"), "created_at", fields.pop("created_at")]
                    for item in fields.items():
                        pairs += item
                    args = [
                        str(max(1, int(ttl * 1000))) if math.isfinite(ttl) else "0",
                        json.dumps(pairs, ensure_ascii=False),
                        vector,
                    ]
                    await upsert(keys=[self._key(record.id)], args=args, client=pipe)
                kept = await pipe.execute()
            stored: list[MemoryRecord] = []
            fixes: list[MemoryRecord] = []
            for record, created_us in zip(stamped, kept):
                if created_us != _us(record.created_at):  # type: ignore[arg-type]
                    record = with_timestamps(record, _dt(created_us), now)  # an update: created_at kept
                    fixes.append(record)
                stored.append(record)
            if fixes and self.index_dates:
                # the written-out date follows the kept created_at
                async with self._client.pipeline(transaction=False) as pipe:
                    for record in fixes:
                        pipe.hset(self._key(record.id), "date", self._encode(record)["date"])
                    await pipe.execute()
        return stored

    async def put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        check_restorable(records)
        if not records:
            return 0
        await self._ensure_ready()
        vectors = await self._vectors(records)
        now = datetime.now(timezone.utc)
        async with self._errors():
            script = self._client.register_script(_PUT_IF_NEWER)
            async with self._client.pipeline(transaction=False) as pipe:
                sent = 0
                for record, vector in zip(records, vectors):
                    ttl = self._effective_ttl(record)
                    remaining = ttl - (now - record.updated_at).total_seconds()  # type: ignore[operator]
                    if remaining <= 0:
                        continue  # it would already have expired
                    args: list[str] = [_us(record.updated_at), str(int(remaining * 1000)) if math.isfinite(remaining) else "0"]  # type: ignore[arg-type]
                    for k, v in self._encode(record).items():
                        args += [k, v]
                    if vector:
                        args += ["vector", vector]  # type: ignore[list-item]
                    await script(keys=[self._key(record.id)], args=args, client=pipe)
                    sent += 1
                results = await pipe.execute() if sent else []
        return sum(int(r) for r in results)

    async def delete_if_older(self, deletions: Mapping[str, datetime]) -> int:
        if not deletions:
            return 0
        await self._ensure_ready()
        async with self._errors():
            script = self._client.register_script(_DELETE_IF_OLDER)
            async with self._client.pipeline(transaction=False) as pipe:
                for id, deleted_at in deletions.items():
                    await script(keys=[self._key(id)], args=[_us(deleted_at)], client=pipe)
                results = await pipe.execute()
        return sum(int(r) for r in results)

    async def get(self, id: str) -> MemoryRecord | None:
        await self._ensure_ready()
        async with self._errors():
            raw = await self._client.register_script(_GET)(keys=[self._key(id)])
        return self._decode(pairs_to_dict(raw)) if raw else None

    async def delete(self, ids: Sequence[str]) -> int:
        if isinstance(ids, str):
            raise InvalidInputError("delete() takes a list of ids, got a single str")
        if not ids:
            return 0
        await self._ensure_ready()
        async with self._errors():
            return int(await self._client.delete(*(self._key(i) for i in ids)))

    async def search(
        self,
        query: str,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        mode: str | None = None,
    ) -> SearchResult:
        """See :meth:`MemoryBackend.search`.

        Keyword mode: ``FT.SEARCH`` with ``SCORER BM25STD``; scores are RediSearch's BM25,
        ``>= 0``; equal scores put the most recently written record first. Vector mode: ``KNN``
        on the ``vector`` field behind the same TAG pre-filter; scores are cosine similarity
        (``1 - distance``). Hybrid: both queries in one pipeline (one round trip), each
        ``max(limit, 50)`` deep, fused by :func:`~primitives.memory.embedding.fuse`.
        """
        check_query(query)
        check_limit(limit)
        mode = check_mode(mode) or ("hybrid" if self.embedder is not None else "keyword")
        tag_filter = normalize_filter(filter)
        words = query_words(query) if mode != "vector" else []
        vector = b""
        if mode != "keyword":
            embedder = require_embedder(self.embedder, mode, self.name)
            if not query.strip():
                return SearchResult([], self.name)
            vector = _pack((await embedder.embed_tuples([query]))[0])
        elif not words:
            return SearchResult([], self.name)
        await self._ensure_ready()
        depth = limit if mode != "hybrid" else max(limit, HYBRID_CANDIDATES)
        async with self._errors():
            if mode == "keyword":
                keyword = self._parse(await self._client.execute_command(*self._keyword_args(words, tag_filter, depth)))
                return SearchResult(keyword, self.name)
            if mode == "vector":
                knn = self._parse(await self._client.execute_command(*self._knn_args(vector, tag_filter, depth)), knn=True)
                return SearchResult(knn, self.name)
            async with self._client.pipeline(transaction=False) as pipe:
                if words:
                    pipe.execute_command(*self._keyword_args(words, tag_filter, depth))
                pipe.execute_command(*self._knn_args(vector, tag_filter, depth))
                replies = await pipe.execute()
        keyword = self._parse(replies[0]) if words else []
        knn = self._parse(replies[-1], knn=True)
        records = {h.record.id: h.record for h in (*keyword, *knn)}
        fused = fuse([(h.record.id, h.score) for h in keyword], [(h.record.id, h.score) for h in knn], limit=limit)
        return SearchResult([SearchHit(records[id], score) for id, score in fused], self.name)

    def _keyword_args(self, words: list[str], tag_filter: Mapping[str, tuple[str, ...]], limit: int) -> list[str]:
        return ["FT.SEARCH", self.spec.name, render_query(words, tag_filter), "WITHSCORES",
                "SCORER", "BM25STD", "RETURN", str(len(_RETURN)), *_RETURN,
                "LIMIT", "0", str(limit), "DIALECT", "2"]

    def _knn_args(self, vector: bytes, tag_filter: Mapping[str, tuple[str, ...]], limit: int) -> list[Any]:
        # the filter is escaped by render_query; the vector and k travel as PARAMS, never inline
        query = f"({render_query([], tag_filter)})=>[KNN $k @vector $vector AS __distance]"
        return ["FT.SEARCH", self.spec.name, query, "PARAMS", "4", "k", str(limit), "vector", vector,
                "SORTBY", "__distance", "ASC", "RETURN", str(len(_RETURN) + 1), *_RETURN, "__distance",
                "LIMIT", "0", str(limit), "DIALECT", "2"]

    def _parse(self, raw: list[Any], *, knn: bool = False) -> list[SearchHit]:
        hits = []
        if knn:
            for i in range(1, len(raw), 2):
                fields = pairs_to_dict(raw[i + 1])
                distance = float(fields.pop("__distance"))
                hits.append(SearchHit(self._decode(fields), 1.0 - distance))
            return hits
        for i in range(1, len(raw), 3):
            fields = pairs_to_dict(raw[i + 2])
            hits.append(SearchHit(self._decode(fields), float(raw[i + 1])))
        hits.sort(key=lambda h: (h.score, h.record.updated_at), reverse=True)
        return hits

    async def count(self, filter: Mapping[str, Any] | None = None) -> int:
        tag_filter = normalize_filter(filter)
        await self._ensure_ready()
        async with self._errors():
            raw = await self._client.execute_command(
                "FT.SEARCH", self.spec.name, render_query([], tag_filter), "LIMIT", "0", "0", "DIALECT", "2"
            )
        return int(raw[0])

    # -- working memory ----------------------------------------------------------------------

    def _session_key(self, session_id: object) -> str:
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidInputError(f"session_id must be a non-empty str, got {session_id!r}")
        return f"{self.prefix}wm:{session_id}"

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        key = self._session_key(session_id)
        for message in messages:
            if not isinstance(message, Message):
                raise InvalidRecordTypeError(
                    f"append_messages() takes Message objects, got {type(message).__name__}"
                )
        if not messages:
            return
        now = datetime.now(timezone.utc)
        encoded = [
            json.dumps(
                {
                    "role": m.role,
                    "content": m.content,
                    "created_at": _us(m.created_at or now),
                    "metadata": dict(m.metadata),
                },
                ensure_ascii=False,
            )
            for m in messages
        ]
        ttl = self.default_ttls[MemoryType.WORKING]
        async with self._errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *encoded)
                pipe.ltrim(key, -self.working_memory_size, -1)
                if math.isfinite(ttl):
                    pipe.pexpire(key, int(ttl * 1000))  # sliding: every append restarts it
                await pipe.execute()

    async def get_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        key = self._session_key(session_id)
        if limit is not None:
            check_limit(limit)
        async with self._errors():
            raw = await self._client.lrange(key, -(limit or self.working_memory_size), -1)
        out = []
        for item in raw:
            d = json.loads(item)
            out.append(Message(d["role"], d["content"], _dt(d["created_at"]), d.get("metadata") or {}))
        return out

    async def clear_session(self, session_id: str) -> None:
        key = self._session_key(session_id)
        async with self._errors():
            await self._client.delete(key)

    # -- lifecycle ---------------------------------------------------------------------------

    # -- skill statistics --------------------------------------------------------------------

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str = DEFAULT_NAMESPACE
    ) -> SkillStats:
        """See :meth:`MemoryBackend.record_skill_execution`; one ``MULTI`` on the hash
        :func:`~primitives.memory.redis_skills.skill_key` (kept ``default_ttls["skill"]``
        seconds after the last execution)."""
        duration = check_skill_execution(name, success, duration_s)
        key = redis_skills.skill_key(self.prefix, namespace, name)
        async with self._errors():
            return await redis_skills.record_execution(
                self._client, key, name, namespace, success, duration, self.default_ttls[MemoryType.SKILL]
            )

    async def skill_stats(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> SkillStats | None:
        """See :meth:`MemoryBackend.skill_stats`."""
        check_skill_name(name)
        async with self._errors():
            return await redis_skills.read_stats(
                self._client, redis_skills.skill_key(self.prefix, namespace, name), name, namespace
            )

    async def health(self) -> Health:
        try:
            await self._ensure_ready()
            async with self._errors():
                info = await self.index_info() or {}
                server = await self._client.info("server")
        except (BackendUnavailableError, ConfigurationError) as exc:
            return Health(ok=False, backend=self.name, detail={"error": str(exc), "error_type": type(exc).__name__})
        return Health(
            ok=True,
            backend=self.name,
            detail={
                "redis_version": server.get("redis_version"),
                "index": self.spec.name,
                "records": int(info.get("num_docs", 0)),
                "indexing": str(info.get("indexing", "0")) == "1",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()
