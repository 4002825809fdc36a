"""``RedisKeyValueStore``: the :class:`~primitives.store.kv.KeyValueStore` on Redis or a Redis
Cluster, through a redis-py asyncio client the caller owns.

Commands (all in Redis 7.0): ``GET``, ``SET [PX ms] [NX]``, ``DEL``, ``EXISTS``, ``PEXPIRE``,
``PTTL``, ``MGET``, ``MSET``, ``MULTI``/``EXEC``, ``SCAN MATCH COUNT``, ``UNLINK``. Keys carry no
hash tag, so on a cluster they spread over all slots; the multi-key calls use redis-py's
``mget_nonatomic`` / ``mset_nonatomic`` and cluster pipelines (one round trip per node).
"""

from __future__ import annotations

from typing import Final, NoReturn

from redis import exceptions as redis_errors

from primitives.errors import ConfigurationError
from primitives.redis_connection import RedisClient, initialize_cluster, is_cluster, redis_errors_mapped
from primitives.store.keys import DEFAULT_PREFIX
from primitives.store.kv import DEFAULT_NAMESPACE, KeyValueStore, ttl_ms
from primitives.store.serialization import Serializer

__all__ = ["RedisKeyValueStore"]

#: ``SCAN ... COUNT`` hint and ``UNLINK`` batch size of :meth:`RedisKeyValueStore.delete_namespace`.
SCAN_BATCH: Final = 500

_WHAT: Final = "Redis (key-value store)"
_FAILURES: Final = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)


async def _raise_mapped(exc: BaseException) -> NoReturn:
    """Re-raise a redis-py failure through :func:`redis_errors_mapped`. The calls catch first and
    map after, so the success path pays no context-manager set-up (a few µs a call)."""
    async with redis_errors_mapped(_WHAT):
        raise exc
    raise exc  # pragma: no cover - the block above always raises


class RedisKeyValueStore(KeyValueStore):
    """The key-value store on Redis.

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster`` created without
            ``decode_responses`` (values are bytes); the caller owns it and closes it.
        namespace, serializer, prefix: As for :class:`~primitives.store.kv.KeyValueStore`.

    Raises:
        ConfigurationError: the client decodes responses to ``str``.
        InvalidKeyError: ``namespace`` is not a non-empty ``str`` UTF-8 can encode, or ``prefix``
            is not a ``str`` it can encode.

    Every Redis failure goes through :func:`~primitives.redis_connection.redis_errors_mapped`, so
    the methods also raise ``BackendUnavailableError``, ``AuthenticationFailedError`` and
    ``PermissionDeniedError`` (an ACL user without access to the key).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serializer: Serializer | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        super().__init__(namespace=namespace, serializer=serializer, prefix=prefix)
        if client.get_connection_kwargs().get("decode_responses"):
            raise ConfigurationError(
                "RedisKeyValueStore needs a client without decode_responses=True: values are bytes"
            )
        self.client = client
        self._cluster = is_cluster(client)

    def __repr__(self) -> str:
        return f"RedisKeyValueStore(namespace={self.namespace!r}, prefix={self.keys.prefix!r})"

    async def _raw_get(self, key: str) -> bytes | None:
        try:
            if self._cluster:
                await initialize_cluster(self.client)
            return await self.client.get(key)
        except _FAILURES as exc:
            await _raise_mapped(exc)

    async def _raw_mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            if self._cluster:
                await initialize_cluster(self.client)
            if self._cluster:
                return await self.client.mget_nonatomic(keys)
            return await self.client.mget(keys)
        except _FAILURES as exc:
            await _raise_mapped(exc)

    async def _raw_set(self, key: str, data: bytes, ttl: float | None, nx: bool) -> bool:
        try:
            if self._cluster:
                await initialize_cluster(self.client)
            if ttl is None:
                done = await self.client.set(key, data, nx=nx)
            else:
                done = await self.client.set(key, data, px=ttl_ms(ttl), nx=nx)
        except _FAILURES as exc:
            await _raise_mapped(exc)
        return bool(done)

    async def _raw_mset(self, items: dict[str, bytes], ttl: float | None) -> None:
        async with redis_errors_mapped(_WHAT, self.client):
            if ttl is None:
                if self._cluster:
                    await self.client.mset_nonatomic(items)
                else:
                    await self.client.mset(items)
                return
            ms = ttl_ms(ttl)
            # MULTI/EXEC on a standalone server; a cluster pipeline is per node and not atomic.
            pipe = self.client.pipeline() if self._cluster else self.client.pipeline(transaction=True)
            for key, data in items.items():
                pipe.set(key, data, px=ms)
            await pipe.execute()

    async def _raw_delete(self, key: str) -> bool:
        async with redis_errors_mapped(_WHAT, self.client):
            return bool(await self.client.delete(key))

    async def _raw_exists(self, key: str) -> bool:
        async with redis_errors_mapped(_WHAT, self.client):
            return bool(await self.client.exists(key))

    async def _raw_expire(self, key: str, ttl: float) -> bool:
        async with redis_errors_mapped(_WHAT, self.client):
            return bool(await self.client.pexpire(key, ttl_ms(ttl)))

    async def _raw_ttl(self, key: str) -> float | None:
        async with redis_errors_mapped(_WHAT, self.client):
            ms = await self.client.pttl(key)
        if ms == -2:
            return None
        if ms == -1:
            return float("inf")
        return ms / 1000

    async def _raw_delete_prefix(self, namespace: str) -> int:
        pattern = self.keys.namespace_pattern(namespace)
        deleted = 0
        batch: list[bytes] = []
        async with redis_errors_mapped(_WHAT, self.client):
            # scan_iter on a RedisCluster scans every primary.
            async for key in self.client.scan_iter(match=pattern, count=SCAN_BATCH):
                batch.append(key)
                if len(batch) >= SCAN_BATCH:
                    deleted += await self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self.client.unlink(*batch)
        return deleted
