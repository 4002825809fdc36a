"""``RedisBackend``: memories in Redis, searched with the Query Engine (RediSearch).

Records are hashes under ``{prefix}rec:{ns}:{id}`` (:mod:`~primitives.memory.redis_backend.keys`,
fields in :mod:`~primitives.memory.redis_backend.codec`; see docs/redis-backend.md for why hashes
and not JSON), indexed by one RediSearch index
(:class:`~primitives.memory.redis_backend.schema.IndexSpec`). Working memory is a list per
``(namespace, session)`` (:mod:`~primitives.memory.redis_backend.working`). Searches run in
:mod:`~primitives.memory.redis_backend.search`; finding and quarantining damaged data and deleting
a store in :mod:`~primitives.memory.redis_backend.maintenance`; ``index migrate`` in
:mod:`~primitives.memory.redis_backend.migration`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timezone
from typing import Any

from primitives.embeddings.base import Embedder
from primitives.errors import (
    ConfigurationError,
    CorruptRecordError,
    DimensionMismatchError,
    IndexSchemaMismatchError,
    PrimitivesError,
    QueryEngineUnavailableError,
    RecordTooLargeError,
)
from primitives.memory.backend import Health, MemoryBackend, SearchResult
from primitives.memory.embedding import check_embeddings, embedding_text
from primitives.memory.record import (
    DEFAULT_TTLS,
    MemoryRecord,
    MemoryType,
    resolved_ttls,
    trusted_replace,
    with_timestamps,
)
from primitives.memory.changes import TOMBSTONE_TTL, ChangeEntry
from primitives.memory.resilient.identity import outbox_identity
from primitives.memory.redis_backend import changes, maintenance, scripts
from primitives.memory.redis_backend import cluster as cluster_module
from primitives.memory.redis_backend.admin import MaintenanceMethods, SessionMethods
from primitives.memory.redis_backend.codec import (
    RETURN_FIELDS,
    date_terms,
    decode_checked,
    dt_from_us,
    encode_record,
    pack_vector,
    record_size,
    unpack_vector,
    us,
)
from primitives.memory.redis_backend.fixes import START_FIX, describe_embedder, migrate_command, query_engine_missing
from primitives.memory.redis_backend.keys import KeyLayout, split_record_key
from primitives.memory.redis_backend.query import query_terms, render_query
from primitives.memory.redis_backend.schema import IndexSpec
from primitives.memory.redis_backend.search import Searcher
from primitives.validation import check_ttl

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

_START_FIX = f"start a local one with: {START_FIX}"
_REPAIR_FIX = "list damaged records with `memory-primitives doctor`, move them aside with `memory-primitives repair`"


def _pexpire_ms(seconds: float) -> str:
    """PEXPIRE milliseconds for a lifetime of ``seconds`` (``"0"``: no expiry, for ``inf``), at
    least 1. A validated ttl (``<= MAX_TTL``, 10**12 s) gives at most 10**15 ms, which Redis
    accepts (it refuses an expiry past signed 64-bit milliseconds since the epoch)."""
    return str(max(1, int(seconds * 1000))) if math.isfinite(seconds) else "0"


class RedisBackend(MaintenanceMethods, SessionMethods, MemoryBackend):
    """Memories in Redis with RediSearch full-text ranking (BM25, ``SCORER BM25STD``).

    The connection is opened lazily: the first call probes the server (``FT._LIST``: a server
    without the Query Engine, such as plain Redis 7 or a managed service without it, is refused
    with :class:`QueryEngineUnavailableError`; nothing is kept in Redis and searched elsewhere,
    because a store whose search silently lives in one process is not what ``REDIS_URL`` promises),
    then creates the index if it is missing or checks an existing one against the configuration.
    Replies are read as bytes and each field decoded strictly here, so a damaged value costs its
    record only (see :meth:`search`, :meth:`get`).

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
        tombstone_ttl: Seconds a delete is remembered after it arrived (``{prefix}tombstones``,
            record keys by arrival; ``{prefix}deleted_at``, each delete's time), for
            :meth:`changes` and so that ``put_if_newer`` never brings back a deleted record.
        cluster: ``url`` names a node of a Redis Cluster (``MEMORY_REDIS_CLUSTER=1``): keys are
            tagged by namespace (one hash slot per tenant), each tenant gets its own index on
            its node, a namespace search goes to that node and one without a namespace filter
            fans out over every tenant
            (:mod:`~primitives.memory.redis_backend.cluster`). Every primary needs the Query
            Engine. A standalone store's keys differ (no tag): move one to a cluster by export
            and import, not by pointing this at its data.

    Raises:
        ConfigurationError: ``url`` is malformed (the message shows the accepted form), or on a
            cluster ``prefix`` or ``index_name`` holds ``{`` or ``}``.
    """

    name = "redis"
    supports_ttl = True
    supports_vectors = False
    supports_working_memory = True
    supports_skill_stats = True
    supports_changes = True

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
        tombstone_ttl: float = TOMBSTONE_TTL,
        cluster: bool = False,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"REDIS_URL {url!r} is not a Redis URL; expected "
                "redis://[[user]:password@]host[:port][/db] or rediss://... for TLS"
            )
        if cluster:
            cluster_module.check_cluster_names(prefix, index_name or f"{prefix}idx")
        try:
            self._client = (aioredis.RedisCluster if cluster else aioredis.Redis).from_url(
                url,
                decode_responses=False,
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
        self.cluster = cluster
        self._layout = KeyLayout(prefix, cluster)
        self._identity = outbox_identity(url, prefix)
        self.embedder = embedder
        self.supports_vectors = embedder is not None  # type: ignore[misc]
        self.spec = IndexSpec(
            name=index_name or f"{prefix}idx",
            prefix=self._layout.rec_prefix,
            dims=embedder.dims if embedder is not None else None,
        )
        self.default_ttls = resolved_ttls(default_ttls)
        self.working_memory_size = working_memory_size
        self.max_record_bytes = max_record_bytes
        self.index_dates = index_dates
        self.socket_connect_timeout = socket_connect_timeout
        self._searcher = self._make_searcher(self.spec.name)  # a single Redis's (cluster: per tenant)
        self._indexes = (cluster_module.ClusterIndexes(self._client, self.spec, self._layout, self._make_searcher)
                         if cluster else None)
        self._store = maintenance.Store(self._client, prefix, self.spec, embedder, index_dates,
                                        cluster_indexes=self._indexes)
        script = scripts.Eval if cluster else self._client.register_script  # EVAL: no per-node script cache to miss
        self._upsert = script(scripts.UPSERT)
        self._put_script = script(scripts.PUT_IF_NEWER)
        self._delete_script = script(scripts.DELETE_IF_OLDER)
        self._delete_now = script(scripts.DELETE)
        # a single Redis's bookkeeping keys (on a cluster each namespace has its own: self._layout)
        self._tombstones, self._deleted_at = self._layout.tombstones(""), self._layout.deleted_at("")
        self._change_log = self._layout.change_log("")
        self.tombstone_ttl = check_ttl(tombstone_ttl, "tombstone_ttl")
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def _make_searcher(self, index: str, client: Any = None) -> Searcher:
        return Searcher(self._client if client is None else client, index, self.name, returns=RETURN_FIELDS, vector_returned=self.embedder is None,
                        dims=self.spec.dims, record_of=lambda key: split_record_key(self.spec.prefix, key))

    @property
    def identity(self) -> str:
        """Server, database and prefix, the same however the URL is spelled (no credentials)."""
        return self._identity

    # -- connection, probing, index ----------------------------------------------------------

    def _errors(self) -> AbstractAsyncContextManager[None]:
        """Map redis-py's exceptions to this package's, naming the fix
        (:func:`~primitives.redis_connection.redis_errors_mapped`)."""
        return redis_errors_mapped("Redis", self._client, url_name="REDIS_URL", unreachable_fix=_START_FIX)

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            async with self._errors():
                if self._indexes is not None:  # each tenant's index is made on its first write
                    self._indexes.check = self._check_schema
                    await self._indexes.probe()
                    await self._check_embedding_model()
                    self._ready = True
                    return
                try:
                    await self._client.execute_command("FT._LIST")
                except redis_errors.ResponseError as exc:
                    if "unknown command" in str(exc).lower():
                        raise QueryEngineUnavailableError(query_engine_missing()) from exc
                    raise
                info = await maintenance.index_info(self._client, self.spec.name)
                if info is None:
                    await maintenance.create_index(self._client, self.spec)
                else:
                    self._check_schema(self.spec, info)
                await self._check_embedding_model()
            self._ready = True

    def _check_schema(self, spec: IndexSpec, info: dict[str, Any]) -> None:
        problems = spec.differences(info)
        vector_problems = [p for p in problems if "field vector " in p]
        if vector_problems and len(vector_problems) == len(problems):
            raise DimensionMismatchError(
                f"index {spec.name!r}: {'; '.join(vector_problems)}; the embedder is "
                f"{describe_embedder(self.embedder)}. Re-embed every record with this embedder "
                f"and rebuild the index (records are kept): {migrate_command(self.prefix, self.embedder)}"
            )
        if problems:
            raise IndexSchemaMismatchError(
                f"index {spec.name!r} exists with a different schema: "
                f"{'; '.join(problems)}. Expected: {self.spec.describe()}. Migrate "
                "(drops the index, converts records of the previous layout, keeps every record, "
                f"re-indexes them): {migrate_command(self.prefix, self.embedder)}"
            )

    async def embedding_meta(self) -> dict[str, str] | None:
        """The ``model`` and ``dims`` this store was embedded with (both ``str``), or ``None``
        when nothing is recorded (no embedder has written yet).

        Raises:
            BackendUnavailableError, AuthenticationFailedError: Redis cannot be used.
        """
        async with self._errors():
            raw = await self._client.hgetall(self._store.meta_key())
        if not raw:
            return None
        return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}

    async def _check_embedding_model(self) -> None:
        """Record the embedder's model and dims on first use; refuse another model later (same
        dims but another model gives vectors that cannot be compared)."""
        if self.embedder is None:
            return
        meta = await self.embedding_meta() or {}
        model, dims = meta.get("model"), meta.get("dims")
        if model is None:
            await self._client.hset(
                self._store.meta_key(), mapping={"model": self.embedder.model, "dims": str(self.embedder.dims)}
            )
        elif model != self.embedder.model or dims != str(self.embedder.dims):
            raise DimensionMismatchError(
                f"the store under {self.prefix!r} was embedded with {model} ({dims} dims) but the "
                f"embedder is {describe_embedder(self.embedder)}; re-embed every record with it "
                f"(records are kept): {migrate_command(self.prefix, self.embedder)}"
            )

    async def index_info(self) -> dict[str, Any] | None:
        """``FT.INFO`` of the index as a dict (keys and values decoded to ``str``, nested lists
        kept), or ``None`` when it does not exist. On a cluster: the index of the first tenant (by
        namespace; ``None`` before any write); :meth:`health` sums every tenant's.

        Raises:
            BackendUnavailableError, AuthenticationFailedError: Redis cannot be used.
        """
        async with self._errors():
            if self._indexes is None:
                return await maintenance.index_info(self._client, self.spec.name)
            tenants = await self._indexes.tenants()
            return await maintenance.index_info(self._client, self._indexes.name_for(tenants[0])) if tenants else None

    async def cluster_spread(self) -> dict[str, dict[str, int]]:
        """On a Redis Cluster: ``{node: {"records", "tenants"}}`` for every primary (records:
        the ``num_docs`` of its tenants' indexes); ``{}`` on a single Redis.

        Raises:
            BackendUnavailableError, AuthenticationFailedError: Redis cannot be used.
        """
        if self._indexes is None:
            return {}
        async with self._errors():
            return await self._indexes.spread()

    async def server_info(self) -> dict[str, Any]:
        """``INFO server`` as a dict (``redis_version``, ...).

        Raises:
            BackendUnavailableError: Redis is unreachable. AuthenticationFailedError: it refused
            the credentials. PermissionDeniedError: the ACL user may not run ``INFO``.
        """
        async with self._errors():
            if self.cluster:
                return dict(await self._client.info("server", target_nodes=self._client.get_random_node()))
            return dict(await self._client.info("server"))

    async def has_command(self, *command: str) -> bool:
        """Whether the server knows ``command`` (sent as given; an ``unknown command`` error
        means no, any other answer yes): ``has_command("FT._LIST")`` probes the Query Engine,
        ``has_command("JSON.GET", "some:key")`` the JSON module.

        Raises:
            BackendUnavailableError, AuthenticationFailedError: Redis cannot be used.
        """
        async with self._errors():
            try:
                await self._client.execute_command(*command)
            except redis_errors.ResponseError as exc:
                return "unknown command" not in str(exc).lower()
        return True

    # -- long-term memory --------------------------------------------------------------------

    def _key(self, namespace: str, id: str) -> str:
        return self._layout.record(namespace, id)

    async def _register(self, namespaces: Sequence[str]) -> None:
        """On a cluster, before namespaces are written: each in the tenant set, each with its
        index (:meth:`~primitives.memory.redis_backend.cluster.ClusterIndexes.ensure`); nothing
        on a single Redis."""
        if self._indexes is not None:
            await self._indexes.ensure(namespaces)

    def _effective_ttl(self, record: MemoryRecord) -> float:
        return record.ttl if record.ttl is not None else self.default_ttls[record.memory_type]

    def _check_storable(self, records: Sequence[MemoryRecord]) -> None:
        limit = self.max_record_bytes
        for record in records:
            size = record_size(record)
            if size > limit:
                raise RecordTooLargeError(
                    f"record {record.id!r} is {size} bytes, over max_record_bytes="
                    f"{limit}; split the text or raise the limit; nothing stored"
                )

    async def _vectors(self, records: Sequence[MemoryRecord]) -> list[tuple[float, ...] | None]:
        """The vector each record is stored with: its embedding (checked and normalised) or the
        embedder's; without an embedder a record's own embedding is stored (not indexed)."""
        if self.embedder is not None:
            return list(await check_embeddings(self.embedder, records, embedding_text))
        return [r.embedding for r in records]

    async def _add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        await self._ensure_ready()
        vectors = await self._vectors(records)
        now = datetime.now(timezone.utc)
        stamped = [with_timestamps(r, r.created_at or now, now) for r in records]
        index_dates = self.index_dates
        packed = [pack_vector(v) if v is not None else b"" for v in vectors]
        async with self._errors():
            await self._register([r.namespace for r in stamped])
            async with self._client.pipeline(transaction=False) as pipe:
                for record, blob in zip(stamped, packed):
                    args = [
                        _pexpire_ms(self._effective_ttl(record)),
                        _json_pairs(encode_record(record, index_dates=index_dates)),
                        blob,
                    ]
                    await self._upsert(keys=[self._key(record.namespace, record.id), self._layout.change_log(record.namespace)], args=args, client=pipe)
                kept = await pipe.execute()
            stored: list[MemoryRecord] = []
            fixes: list[MemoryRecord] = []
            for record, blob, created_us in zip(stamped, packed, kept):
                if self.embedder is not None:  # the vector as stored (float32), as get() reads it
                    record = trusted_replace(record, embedding=unpack_vector(blob))
                if int(created_us) != int(us(record.created_at)):  # type: ignore[arg-type]
                    record = with_timestamps(record, dt_from_us(created_us), now)  # an update: created_at kept
                    fixes.append(record)
                stored.append(record)
            if fixes and index_dates:
                # the written-out date follows the kept created_at
                async with self._client.pipeline(transaction=False) as pipe:
                    for record in fixes:
                        pipe.hset(self._key(record.namespace, record.id), "date", date_terms(record.created_at))  # type: ignore[arg-type]
                    await pipe.execute()
        return stored

    async def _put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        """One Lua script per record (:data:`~primitives.memory.redis_backend.scripts.PUT_IF_NEWER`),
        pipelined. A record whose ttl ran out since its ``updated_at`` is not written, and the
        stored version it supersedes (not newer) is deleted, as the write followed by its expiry
        would have left it."""
        await self._ensure_ready()
        vectors = await self._vectors(records)
        now = datetime.now(timezone.utc)
        written: list[bool] = []
        layout = self._layout
        async with self._errors():
            await self._register([r.namespace for r in records])
            async with self._client.pipeline(transaction=False) as pipe:
                for record, vector in zip(records, vectors):
                    key = self._key(record.namespace, record.id)
                    ns = record.namespace
                    remaining = self._effective_ttl(record) - (now - record.updated_at).total_seconds()  # type: ignore[operator]
                    if remaining <= 0:  # it would already have expired
                        await self._delete_script(keys=[key, layout.tombstones(ns), layout.deleted_at(ns)], args=[us(record.updated_at), "0"], client=pipe)  # type: ignore[arg-type]
                        written.append(False)
                        continue
                    args = [
                        us(record.updated_at),  # type: ignore[arg-type]
                        _pexpire_ms(remaining),
                        _json_pairs(encode_record(record, index_dates=self.index_dates)),
                        pack_vector(vector) if vector is not None else b"",
                    ]
                    await self._put_script(keys=[key, layout.deleted_at(ns), layout.change_log(ns)], args=args, client=pipe)
                    written.append(True)
                results = await pipe.execute()
        return sum(int(r) for r, counted in zip(results, written) if counted)

    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        await self._ensure_ready()
        tombstones, deleted = self._layout.tombstones(namespace), self._layout.deleted_at(namespace)
        async with self._errors():
            await self._register([namespace])
            async with self._client.pipeline(transaction=False) as pipe:
                for id, deleted_at in deletions.items():
                    await self._delete_script(keys=[self._key(namespace, id), tombstones, deleted], args=[us(deleted_at), "1"], client=pipe)
                changes.trim_tombstones(pipe, tombstones, deleted, self.tombstone_ttl)
                results = (await pipe.execute())[:-1]
        return sum(int(r) for r in results)

    async def _get(self, namespace: str, id: str) -> MemoryRecord | None:
        """One ``HGETALL``. A stored record that does not decode, that holds another
        ``(namespace, id)`` or whose TAG fields do not encode its values raises
        :class:`CorruptRecordError` naming its key; so does a key of another Redis type."""
        await self._ensure_ready()
        key = self._key(namespace, id)
        async with self._errors():
            try:
                fields = await self._client.hgetall(key)
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                kind = (await self._client.type(key)).decode("ascii", "replace")
                reason = f"it is a Redis {kind}, not a hash"
                raise CorruptRecordError(f"the record at {key!r} cannot be read: {reason}; {_REPAIR_FIX}",
                                         key=key, reason=reason) from None
        if not fields:
            return None
        try:
            return decode_checked(fields, key, self.spec.prefix, dims=self.spec.dims)
        except CorruptRecordError as exc:
            raise CorruptRecordError(f"{exc}; {_REPAIR_FIX}", key=exc.key, reason=exc.reason) from None

    async def _delete(self, namespace: str, ids: list[str]) -> int:
        await self._ensure_ready()
        now = us(datetime.now(timezone.utc))
        tombstones, deleted = self._layout.tombstones(namespace), self._layout.deleted_at(namespace)
        async with self._errors():
            await self._register([namespace])
            async with self._client.pipeline(transaction=False) as pipe:
                for id in ids:
                    await self._delete_now(keys=[self._key(namespace, id), tombstones, deleted], args=[now], client=pipe)
                changes.trim_tombstones(pipe, tombstones, deleted, self.tombstone_ttl)
                return sum(int(r) for r in (await pipe.execute())[:-1])

    async def _changes(self, after: tuple[int, str, str] | None, limit: int) -> list[ChangeEntry]:
        """Records from the change log (a sorted set of record keys by last write), deletes
        from the tombstone sorted set: O(changes after ``after``), never a scan of the store
        (:mod:`~primitives.memory.redis_backend.changes`). Damaged records are skipped and
        reported like a search's."""
        await self._ensure_ready()
        layout = self._layout
        async with self._errors():
            if self.cluster:  # each tenant's log in its own slot: read each, merge by position
                return await cluster_module.read_changes(self._client, self.spec, layout, after, limit, backend=self.name)
            return await changes.read_changes(
                self._client, self.spec, layout.change_log(""), layout.tombstones(""), layout.deleted_at(""), after, limit,
                backend=self.name,
            )

    async def _search(
        self, query: str, tag_filter: dict[str, tuple[str, ...]], limit: int, mode: str
    ) -> SearchResult:
        """Keyword mode: ``FT.SEARCH`` with ``SCORER BM25STD``; scores are RediSearch's BM25,
        ``>= 0``; equal scores put the most recently written record first. Vector mode: ``KNN``
        on the ``vector`` field behind the same TAG pre-filter; scores are cosine similarity
        (``1 - distance``). Hybrid: both queries in one pipeline (one round trip), each
        ``max(limit, 50)`` deep, fused by :func:`~primitives.memory.embedding.fuse`. A damaged
        hit is left out, reported and counted in ``skipped``, and further pages are fetched
        (:mod:`~primitives.memory.redis_backend.search`) so up to ``limit`` good hits come back
        when the index has them."""
        words = query_terms(query) if mode != "vector" else []
        if mode == "keyword" and not words:
            return SearchResult([], self.name)
        await self._ensure_ready()
        if self._indexes is not None:
            return await self._cluster_search(query, words, tag_filter, limit, mode)
        searcher = self._searcher
        async with self._errors():
            if mode == "keyword":
                ranking = await searcher.keyword(words, tag_filter, limit)
                return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)
            assert self.embedder is not None
            vector = pack_vector(await self.embedder.embed_query(query))
            if mode == "vector":
                ranking = await searcher.knn(vector, tag_filter, limit)
                return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)
            ranking = await searcher.hybrid(words, vector, tag_filter, limit)
        return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)

    async def _cluster_search(self, query: str, words: list[str], tag_filter: dict[str, tuple[str, ...]], limit: int,
                              mode: str) -> SearchResult:
        """:func:`~primitives.memory.redis_backend.cluster.search` (one tenant's index per
        namespace filtered, or every tenant's)."""
        assert self._indexes is not None
        vector = None
        if mode != "keyword":
            assert self.embedder is not None
            vector = pack_vector(await self.embedder.embed_query(query))
        async with self._errors():
            ranking = await cluster_module.search(self._indexes, mode, words, vector, tag_filter, limit)
        return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)

    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        await self._ensure_ready()
        if self._indexes is not None:
            async with self._errors():
                return await cluster_module.count(self._indexes, tag_filter)
        async with self._errors():
            raw = await self._client.execute_command(
                "FT.SEARCH", self.spec.name, render_query([], tag_filter), "LIMIT", "0", "0", "DIALECT", "2"
            )
        return int(raw[0])

    # -- lifecycle ---------------------------------------------------------------------------

    async def health(self) -> Health:
        """``ok`` with ``redis_version``, ``index``, ``records`` (``num_docs``), ``indexing``
        and ``index_failures`` (``hash_indexing_failures``: records the index could not take,
        see ``memory-primitives doctor``); never raises for an unusable server (``ok=False``
        with ``error`` and ``error_type``)."""
        try:
            await self._ensure_ready()
            info = await self.index_info() or {}
            server = await self.server_info()
            if self._indexes is not None:  # every tenant's index, summed
                async with self._errors():
                    infos = [i or {} for i in (await self._indexes.infos()).values()]
                info = {"num_docs": sum(int(i.get("num_docs", 0)) for i in infos),
                        "indexing": "1" if any(str(i.get("indexing", "0")) == "1" for i in infos) else "0",
                        "hash_indexing_failures": sum(int(i.get("hash_indexing_failures", 0)) for i in infos)}
        except PrimitivesError as exc:  # unreachable, refused, misconfigured: not usable as configured
            return Health(ok=False, backend=self.name, detail={"error": str(exc), "error_type": type(exc).__name__})
        return Health(
            ok=True,
            backend=self.name,
            detail={
                "redis_version": server.get("redis_version"),
                "index": self.spec.name,
                "records": int(info.get("num_docs", 0)),
                "indexing": str(info.get("indexing", "0")) == "1",
                "index_failures": int(info.get("hash_indexing_failures", 0)),
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_pairs(pairs: list[str]) -> str:
    return json.dumps(pairs, ensure_ascii=False)
