"""One way to open a Redis connection for the store and sync primitives, and one place that maps
redis-py's exceptions to this package's.

Every store primitive takes a redis-py asyncio client (``redis.asyncio.Redis`` or
``redis.asyncio.RedisCluster``) that the caller owns, or builds one with :func:`connect`. TLS is
the ``rediss://`` scheme; ACL users are ``rediss://user:password@host:port``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    PermissionDeniedError,
)

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Redis store primitives need redis-py: python -m pip install 'memory-primitives[redis]'"
    ) from exc

__all__ = ["RedisClient", "connect", "is_cluster", "initialize_cluster", "redis_errors_mapped", "cluster_from_env"]

#: What the store primitives accept: a standalone or a cluster client from redis-py's asyncio API.
RedisClient: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"

_TRUE = ("1", "true", "yes", "on")


def connect(
    url: str,
    *,
    cluster: bool = False,
    socket_connect_timeout: float = 2.0,
    **kwargs: Any,
) -> aioredis.Redis | aioredis.RedisCluster:
    """A redis-py asyncio client for ``url``; nothing connects until the first command.

    Args:
        url: ``redis://[user:password@]host:port[/db]`` or ``rediss://`` for TLS. TLS options can
            be given as keyword arguments (``ssl_ca_certs="ca.pem"``, ``ssl_certfile``,
            ``ssl_keyfile``) or in the query string (``?ssl_ca_certs=/path/ca.pem``).
        cluster: ``url`` names one node of a Redis Cluster; the client discovers the others and
            routes each command to the node owning its key's slot.
        socket_connect_timeout: Seconds to wait for a TCP (and TLS) connection.
        **kwargs: Passed to ``Redis.from_url`` / ``RedisCluster.from_url``.

    Raises:
        ConfigurationError: ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"a Redis URL must start with redis://, rediss:// (TLS) or unix://, got {url!r}"
        )
    if cluster:
        return aioredis.RedisCluster.from_url(url, socket_connect_timeout=socket_connect_timeout, **kwargs)
    return aioredis.Redis.from_url(url, socket_connect_timeout=socket_connect_timeout, **kwargs)


def cluster_from_env(env: Mapping[str, str]) -> bool:
    """``MEMORY_REDIS_CLUSTER`` is on (``1``, ``true``, ``yes``, ``on``): ``REDIS_URL`` names a
    node of a Redis Cluster."""
    return (env.get("MEMORY_REDIS_CLUSTER") or "").strip().lower() in _TRUE


async def initialize_cluster(client: object) -> None:
    """Discover a cluster client's nodes and slots now, before commands go out; nothing for a
    standalone client. Idempotent and cheap once done (redis-py returns at once).

    redis-py 8.1.0's asyncio ``RedisCluster`` initialises lazily on its first command, and
    concurrent first commands race in that path: 50 tasks of ``INCR`` on a fresh client failed
    104-155 times in 2,500 calls with ``AttributeError: 'NoneType' object has no attribute
    'writelines'`` (and a few dropped connections); with ``initialize()`` awaited before each
    command, none failed. Every store and sync primitive calls this (through
    :func:`redis_errors_mapped`) before its commands.

    When ``initialize()`` fails on a connection error while some primaries answer, the client is
    initialised through one of them (:func:`_initialize_past_a_dead_default_node`); otherwise
    redis-py's error is raised as it came.
    """
    if not isinstance(client, aioredis.RedisCluster):
        return
    try:
        await client.initialize()
    except (redis_errors.ConnectionError, redis_errors.TimeoutError):
        if not await _initialize_past_a_dead_default_node(client):
            raise


async def _initialize_past_a_dead_default_node(client: aioredis.RedisCluster) -> bool:
    """Finish a cluster client's initialisation through any primary that answers; ``False`` when
    none does.

    redis-py 8.1.0's ``RedisCluster.initialize`` loads the slot map from any reachable startup
    node, then sends ``COMMAND`` to the default node, which it resets to the first primary listed.
    While a killed primary is still listed (until ``cluster-node-timeout`` marks it failed), that
    ``COMMAND`` fails whenever the dead node sorts first, and with it every command of the client,
    also to the primaries that answer (seen here: reads of a surviving node's tenants failing
    after another node was killed). This loads the map the same way, takes the first primary
    that answers ``COMMAND`` as the default node, and marks the client initialised as
    ``initialize`` does on success.
    """
    try:
        await client.nodes_manager.initialize()
    except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError):  # none answers: caller re-raises
        return False
    for node in client.get_primaries():
        try:
            await client.commands_parser.initialize(node)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
            continue
        client.set_default_node(node)
        client._initialize = False  # what initialize() sets once both steps succeed
        return True
    return False


def is_cluster(client: object) -> bool:
    """``client`` is a redis-py asyncio cluster client."""
    return isinstance(client, aioredis.RedisCluster)


@asynccontextmanager
async def redis_errors_mapped(
    what: str = "Redis",
    client: object = None,
    *,
    url_name: str = "the URL",
    unreachable_fix: str | None = None,
) -> AsyncIterator[None]:
    """Map redis-py's exceptions raised inside the block to this package's, naming the fix.

    ``AuthenticationError`` / ``NOAUTH`` / ``WRONGPASS`` become :class:`AuthenticationFailedError`;
    an ACL ``NOPERM`` (also inside a Lua script: ``ACL failure in script``) becomes
    :class:`PermissionDeniedError`; connection errors, timeouts and ``OSError`` become
    :class:`BackendUnavailableError`, as do a cluster's outages (``CLUSTERDOWN`` / ``MASTERDOWN``
    replies, no node reachable, a slot no node serves), so the resilient wrapper falls back on a
    cluster as on one Redis. Other ``ResponseError``\\ s propagate unchanged (they are bugs or bad
    input the caller should see).

    Args:
        what: Names the server in messages (``"Redis (key-value store)"``).
        client: The client the block will use; a cluster client is initialised first (see
            :func:`initialize_cluster`).
        url_name: Where the credentials are configured, for the authentication messages
            (``"REDIS_URL"``).
        unreachable_fix: Appended to the unreachable message (e.g. how to start a server).
    """
    try:
        if client is not None:
            await initialize_cluster(client)
        yield
    except redis_errors.AuthenticationError as exc:
        raise AuthenticationFailedError(
            f"{what} refused the credentials ({exc}); check the user and password in {url_name}"
        ) from exc
    except redis_errors.NoPermissionError as exc:
        raise PermissionDeniedError(f"{what} ACL refused the command: {exc}") from exc
    except redis_errors.ClusterDownError as exc:  # CLUSTERDOWN / MASTERDOWN: an outage, not a refusal
        raise BackendUnavailableError(
            f"{what} cluster is down ({exc}): a primary holding some hash slots is unreachable"
        ) from exc
    except redis_errors.RedisClusterException as exc:  # not a RedisError in redis-py
        if isinstance(exc, redis_errors.SlotNotCoveredError) or "cannot be connected" in str(exc):
            fix = f"; {unreachable_fix}" if unreachable_fix else ""
            raise BackendUnavailableError(f"{what} is unreachable: {exc}{fix}") from exc
        raise
    except redis_errors.ResponseError as exc:
        text = str(exc)
        if "NOAUTH" in text or "WRONGPASS" in text:
            raise AuthenticationFailedError(
                f"{what} needs valid credentials ({exc}); put them in {url_name} as "
                "redis://user:password@host:port"
            ) from exc
        if "NOPERM" in text or "ACL failure in script" in text:
            raise PermissionDeniedError(f"{what} ACL refused the command: {exc}") from exc
        raise
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise BackendUnavailableError(
                f"{what} TLS certificate check failed ({exc}); pass the server's CA with "
                "ssl_ca_certs=PATH (or ?ssl_ca_certs=PATH in the rediss:// URL)"
            ) from exc
        fix = f"; {unreachable_fix}" if unreachable_fix else ""
        raise BackendUnavailableError(f"{what} is unreachable: {exc}{fix}") from exc
