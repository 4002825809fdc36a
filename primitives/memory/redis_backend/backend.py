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
from primitives.memory.backend import DamagedRecord, DamageReport, Health, MemoryBackend, SearchResult
from primitives.memory.embedding import check_embeddings, embedding_text
from primitives.memory.record import (
    DEFAULT_TTLS,
    MemoryRecord,
    MemoryType,
    Message,
    resolved_ttls,
    trusted_replace,
    with_timestamps,
)
from primitives.memory.changes import TOMBSTONE_TTL, ChangeEntry
from primitives.memory.resilient.identity import outbox_identity
from primitives.memory.redis_backend import changes, maintenance, migration, scripts, working
from primitives.memory.redis_backend import skills as redis_skills
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
from primitives.memory.redis_backend.keys import change_log_key, deleted_at_key, record_key, session_key, split_record_key, tombstones_key
from primitives.memory.redis_backend.query import query_terms, render_query
from primitives.memory.redis_backend.schema import IndexSpec
from primitives.memory.redis_backend.search import Searcher
from primitives.memory.skills import SkillStats
from primitives.validation import check_limit, check_ttl

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

_START_FIX = "start one with: memory-primitives redis start"
_REPAIR_FIX = "list damaged records with `memory-primitives doctor`, move them aside with `memory-primitives repair`"


def _pexpire_ms(seconds: float) -> str:
    """PEXPIRE milliseconds for a lifetime of ``seconds`` (``"0"``: no expiry, for ``inf``), at
    least 1. A validated ttl (``<= MAX_TTL``, 10**12 s) gives at most 10**15 ms, which Redis
    accepts (it refuses an expiry past signed 64-bit milliseconds since the epoch)."""
    return str(max(1, int(seconds * 1000))) if math.isfinite(seconds) else "0"


class RedisBackend(MemoryBackend):
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

    Raises:
        ConfigurationError: ``url`` is malformed (the message shows the accepted form).
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
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"REDIS_URL {url!r} is not a Redis URL; expected "
                "redis://[[user]:password@]host[:port][/db] or rediss://... for TLS"
            )
        try:
            self._client = aioredis.from_url(
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
        self._identity = outbox_identity(url, prefix)
        self.embedder = embedder
        self.supports_vectors = embedder is not None  # type: ignore[misc]
        self.spec = IndexSpec(
            name=index_name or f"{prefix}idx",
            prefix=f"{prefix}rec:",
            dims=embedder.dims if embedder is not None else None,
        )
        self.default_ttls = resolved_ttls(default_ttls)
        self.working_memory_size = working_memory_size
        self.max_record_bytes = max_record_bytes
        self.index_dates = index_dates
        self.socket_connect_timeout = socket_connect_timeout
        self._searcher = Searcher(
            self._client, self.spec.name, self.name, returns=RETURN_FIELDS,
            vector_returned=embedder is None, dims=self.spec.dims,
            record_of=lambda key: split_record_key(self.spec.prefix, key),
        )
        self._store = maintenance.Store(self._client, prefix, self.spec, embedder, index_dates)
        self._upsert = self._client.register_script(scripts.UPSERT)
        self._put_script = self._client.register_script(scripts.PUT_IF_NEWER)
        self._delete_script = self._client.register_script(scripts.DELETE_IF_OLDER)
        self._delete_now = self._client.register_script(scripts.DELETE)
        self._tombstones = tombstones_key(prefix)
        self._deleted_at = deleted_at_key(prefix)
        self._change_log = change_log_key(prefix)
        self.tombstone_ttl = check_ttl(tombstone_ttl, "tombstone_ttl")
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @property
    def identity(self) -> str:
        """Server, database and prefix, the same however the URL is spelled (no credentials)."""
        return self._identity

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
                info = await maintenance.index_info(self._client, self.spec.name)
                if info is None:
                    await maintenance.create_index(self._client, self.spec)
                else:
                    self._check_schema(info)
                await self._check_embedding_model()
            self._ready = True

    def _check_schema(self, info: dict[str, Any]) -> None:
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
                "(drops the index, converts records of the previous layout, keeps every record, "
                f"re-indexes them): memory-primitives index migrate --prefix {self.prefix}"
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
                f"embedder is {self.embedder.model} ({self.embedder.dims} dims); re-embed every "
                f"record (records are kept): memory-primitives index migrate --prefix {self.prefix}"
            )

    async def index_info(self) -> dict[str, Any] | None:
        """``FT.INFO`` of the index as a dict (keys and values decoded to ``str``, nested lists
        kept), or ``None`` when it does not exist.

        Raises:
            BackendUnavailableError, AuthenticationFailedError: Redis cannot be used.
        """
        async with self._errors():
            return await maintenance.index_info(self._client, self.spec.name)

    async def server_info(self) -> dict[str, Any]:
        """``INFO server`` as a dict (``redis_version``, ...).

        Raises:
            BackendUnavailableError: Redis is unreachable. AuthenticationFailedError: it refused
            the credentials. PermissionDeniedError: the ACL user may not run ``INFO``.
        """
        async with self._errors():
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

    # -- maintenance (maintenance.py) --------------------------------------------------------

    async def migrate(self) -> int:
        """Bring the store to this version's layout and index (:meth:`migrate_layout`); returns
        how many records were rewritten: converted from the previous layout, or, with an
        embedder, re-embedded (every record that decodes)."""
        return await self.migrate_index()

    async def migrate_index(self, *, batch_size: int = 256) -> int:
        """:meth:`migrate` in batches of ``batch_size`` keys."""
        report = await self.migrate_layout(batch_size=batch_size)
        return report.reembedded if self.embedder is not None else report.converted

    async def migrate_layout(self, *, batch_size: int = 256) -> migration.MigrationReport:
        """See :func:`~primitives.memory.redis_backend.migration.migrate` (what was converted,
        quarantined and re-embedded).

        Raises:
            BackendUnavailableError, AuthenticationFailedError, PermissionDeniedError: Redis
                cannot be used; ConfigurationError: it refused ``FT.CREATE``.
        """
        async with self._errors():
            report = await migration.migrate(self._store, batch_size=batch_size)
        self._ready = False
        return report

    async def drop(self) -> None:
        """See :func:`~primitives.memory.redis_backend.maintenance.drop`."""
        async with self._errors():
            await maintenance.drop(self._store)
        self._ready = False

    async def find_damaged(self, *, limit: int = 100) -> DamageReport:
        """Damaged records, keys of the wrong type and working-memory lists with damaged items,
        by an O(store) scan (:meth:`scan_damaged`); ``key`` is the Redis key.

        Raises:
            InvalidInputError: ``limit`` is not in ``1..MAX_LIMIT``.
        """
        check_limit(limit)
        scan = await self.scan_damaged(limit)
        return DamageReport(
            scanned=scan.scanned_records + scan.scanned_sessions,
            damaged=[DamagedRecord(d["key"], d["reason"]) for d in scan.first],
            complete=scan.damaged <= limit,
        )

    async def scan_damaged(self, limit: int = 20, *, batch_size: int = 200) -> maintenance.ScanReport:
        """See :func:`~primitives.memory.redis_backend.maintenance.scan`."""
        async with self._errors():
            return await maintenance.scan(self._store, limit=limit, batch_size=batch_size)

    async def repair(self) -> list[DamagedRecord]:
        """Move every damaged record, key of the wrong type and damaged working-memory item to
        ``{prefix}quarantine:`` (:meth:`quarantine`); returns them in scan order."""
        report = await self.quarantine()
        return [DamagedRecord(m["key"], m["reason"], m.get("moved_to")) for m in report.moved]

    async def quarantine(self, *, dry_run: bool = False, batch_size: int = 200) -> maintenance.RepairReport:
        """See :func:`~primitives.memory.redis_backend.maintenance.repair` (where each key went,
        and what a dry run would move)."""
        async with self._errors():
            return await maintenance.repair(self._store, dry_run=dry_run, batch_size=batch_size)

    # -- long-term memory --------------------------------------------------------------------

    def _key(self, namespace: str, id: str) -> str:
        return record_key(self.spec.prefix, namespace, id)

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
            async with self._client.pipeline(transaction=False) as pipe:
                for record, blob in zip(stamped, packed):
                    args = [
                        _pexpire_ms(self._effective_ttl(record)),
                        _json_pairs(encode_record(record, index_dates=index_dates)),
                        blob,
                    ]
                    await self._upsert(keys=[self._key(record.namespace, record.id), self._change_log], args=args, client=pipe)
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
        async with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for record, vector in zip(records, vectors):
                    key = self._key(record.namespace, record.id)
                    remaining = self._effective_ttl(record) - (now - record.updated_at).total_seconds()  # type: ignore[operator]
                    if remaining <= 0:  # it would already have expired
                        await self._delete_script(keys=[key, self._tombstones, self._deleted_at], args=[us(record.updated_at), "0"], client=pipe)  # type: ignore[arg-type]
                        written.append(False)
                        continue
                    args = [
                        us(record.updated_at),  # type: ignore[arg-type]
                        _pexpire_ms(remaining),
                        _json_pairs(encode_record(record, index_dates=self.index_dates)),
                        pack_vector(vector) if vector is not None else b"",
                    ]
                    await self._put_script(keys=[key, self._deleted_at, self._change_log], args=args, client=pipe)
                    written.append(True)
                results = await pipe.execute()
        return sum(int(r) for r, counted in zip(results, written) if counted)

    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        await self._ensure_ready()
        async with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for id, deleted_at in deletions.items():
                    await self._delete_script(keys=[self._key(namespace, id), self._tombstones, self._deleted_at], args=[us(deleted_at), "1"], client=pipe)
                changes.trim_tombstones(pipe, self._tombstones, self._deleted_at, self.tombstone_ttl)
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
        async with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for id in ids:
                    await self._delete_now(keys=[self._key(namespace, id), self._tombstones, self._deleted_at], args=[now], client=pipe)
                changes.trim_tombstones(pipe, self._tombstones, self._deleted_at, self.tombstone_ttl)
                return sum(int(r) for r in (await pipe.execute())[:-1])

    async def _changes(self, after: tuple[int, str, str] | None, limit: int) -> list[ChangeEntry]:
        """Records from the change log (a sorted set of record keys by last write), deletes
        from the tombstone sorted set: O(changes after ``after``), never a scan of the store
        (:mod:`~primitives.memory.redis_backend.changes`). Damaged records are skipped and
        reported like a search's."""
        await self._ensure_ready()
        async with self._errors():
            return await changes.read_changes(
                self._client, self.spec, self._change_log, self._tombstones, self._deleted_at, after, limit, backend=self.name
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
        searcher = self._searcher
        async with self._errors():
            if mode == "keyword":
                ranking = await searcher.keyword(words, tag_filter, limit)
                return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)
            assert self.embedder is not None
            vector = pack_vector((await self.embedder.embed_tuples([query]))[0])
            if mode == "vector":
                ranking = await searcher.knn(vector, tag_filter, limit)
                return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)
            ranking = await searcher.hybrid(words, vector, tag_filter, limit)
        return SearchResult(ranking.hits, self.name, skipped=ranking.skipped)

    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        await self._ensure_ready()
        async with self._errors():
            raw = await self._client.execute_command(
                "FT.SEARCH", self.spec.name, render_query([], tag_filter), "LIMIT", "0", "0", "DIALECT", "2"
            )
        return int(raw[0])

    # -- working memory ----------------------------------------------------------------------

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        """One ``MULTI`` (:func:`~primitives.memory.redis_backend.working.append`)."""
        async with self._errors():
            await working.append(self._client, session_key(self.prefix, namespace, session_id), messages,
                                 size=self.working_memory_size, ttl=self.default_ttls[MemoryType.WORKING])

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        async with self._errors():
            return await working.read(self._client, session_key(self.prefix, namespace, session_id),
                                      limit or self.working_memory_size, self.name)

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        async with self._errors():
            await working.clear(self._client, session_key(self.prefix, namespace, session_id))

    # -- skill statistics --------------------------------------------------------------------

    async def _record_skill_execution(self, name: str, success: bool, duration_s: float, namespace: str) -> SkillStats:
        """One ``MULTI`` on the hash :func:`~primitives.memory.redis_backend.skills.skill_key`
        (kept ``default_ttls["skill"]`` seconds after the last execution)."""
        key = redis_skills.skill_key(self.prefix, namespace, name)
        async with self._errors():
            return await redis_skills.record_execution(
                self._client, key, name, namespace, success, duration_s, self.default_ttls[MemoryType.SKILL]
            )

    async def _skill_stats(self, name: str, namespace: str) -> SkillStats | None:
        async with self._errors():
            return await redis_skills.read_stats(
                self._client, redis_skills.skill_key(self.prefix, namespace, name), name, namespace
            )

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
