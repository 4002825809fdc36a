"""``primitives.redis_connection``: URLs, the cluster switch, the error mapping, and the
initialisation that makes a fresh cluster client safe under concurrent first commands."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as redis_errors

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    PermissionDeniedError,
)
from primitives.redis_connection import cluster_from_env, connect, is_cluster, redis_errors_mapped


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "", None])
def test_connect_refuses_what_is_not_a_redis_url(url) -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        connect(url)  # type: ignore[arg-type]


def test_the_cluster_switch() -> None:
    assert is_cluster(connect("redis://127.0.0.1:1", cluster=True))
    assert not is_cluster(connect("redis://127.0.0.1:1"))
    assert cluster_from_env({"MEMORY_REDIS_CLUSTER": "yes"}) and not cluster_from_env({})


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (redis_errors.AuthenticationError("invalid username-password pair"), AuthenticationFailedError),
        (redis_errors.ResponseError("WRONGPASS invalid username-password pair"), AuthenticationFailedError),
        (redis_errors.NoPermissionError("this user has no permissions to access one of the keys"), PermissionDeniedError),
        (redis_errors.ResponseError("ACL failure in script: No permissions to access a channel"), PermissionDeniedError),
        (redis_errors.ConnectionError("Connection refused"), BackendUnavailableError),
        (redis_errors.TimeoutError("Timeout reading from socket"), BackendUnavailableError),
    ],
)
async def test_redis_errors_are_mapped_to_the_package_s(raised, expected) -> None:
    with pytest.raises(expected) as info:
        async with redis_errors_mapped("Redis (test)"):
            raise raised
    assert info.value.__cause__ is raised and "Redis (test)" in str(info.value)


async def test_other_response_errors_propagate_unchanged() -> None:
    with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
        async with redis_errors_mapped():
            raise redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


@pytest.mark.integration
async def test_a_fresh_cluster_client_takes_50_concurrent_first_calls(redis_cluster) -> None:
    """redis-py 8.1.0 alone fails ~5% of such calls (its lazy initialisation races); the store
    initialises the client first, so none fail."""
    from primitives.store.kv_redis import RedisKeyValueStore

    client = connect(redis_cluster.url, cluster=True)
    store = RedisKeyValueStore(client, namespace="fresh-cluster")
    try:
        async def worker(n: int) -> None:
            for i in range(20):
                await store.set("counter", f"{n}-{i}", {"n": n, "i": i})

        await asyncio.gather(*(worker(n) for n in range(50)))
        values = await store.mget("counter", [f"{n}-{i}" for n in range(50) for i in range(20)])
        assert values == [{"n": n, "i": i} for n in range(50) for i in range(20)]
        assert await store.delete_namespace("fresh-cluster") == 1000
    finally:
        await client.aclose()
