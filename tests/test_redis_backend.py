"""``RedisBackend`` against a real Redis with the Query Engine: the contract suite unchanged,
then what only Redis shows (expiry by EXPIRE, schema checks, plain Redis, bad configuration)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    IndexSchemaMismatchError,
    QueryEngineUnavailableError,
    RecordTooLargeError,
)
from primitives.memory import MemoryRecord, Message
from primitives.memory.redis_backend import RedisBackend
from tests.contract import BackendContract
from tests.redis_server import start_or_fail

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


def fresh_prefix() -> str:
    return f"t{next(_prefixes)}:"


class TestRedisContract(BackendContract):
    @pytest.fixture
    async def backend(self, redis_server):
        backend = RedisBackend(redis_server.url, prefix=fresh_prefix(), working_memory_size=10)
        yield backend
        await backend.aclose()


async def test_ttl_expires_records_and_their_index_entries(redis_server) -> None:
    backend = RedisBackend(redis_server.url, prefix=fresh_prefix())
    await backend.add([MemoryRecord(text="short lived fact", id="s", ttl=0.3),
                       MemoryRecord(text="long lived fact", id="l", ttl=100)])
    assert await backend.get("s") is not None
    await asyncio.sleep(0.6)
    assert await backend.get("s") is None
    assert [h.record.id for h in (await backend.search("lived fact")).hits] == ["l"]
    assert await backend.count() == 1
    await backend.aclose()


async def test_working_memory_has_a_sliding_ttl(redis_server) -> None:
    from primitives.memory.record import MemoryType

    backend = RedisBackend(redis_server.url, prefix=fresh_prefix(), default_ttls={MemoryType.WORKING: 0.5})
    await backend.append_messages("s", [Message("user", "hi")])
    await asyncio.sleep(0.3)
    await backend.append_messages("s", [Message("user", "again")])  # restarts the TTL
    await asyncio.sleep(0.3)
    assert len(await backend.get_messages("s")) == 2
    await asyncio.sleep(0.4)
    assert await backend.get_messages("s") == []
    await backend.aclose()


async def test_existing_index_with_other_schema_is_an_error_and_migrate_keeps_records(redis_server) -> None:
    prefix = fresh_prefix()
    first = RedisBackend(redis_server.url, prefix=prefix)
    await first.add([MemoryRecord(text="keep this memory", id="k")])
    # someone re-creates the index with another schema
    client = first._client
    await client.execute_command("FT.DROPINDEX", first.spec.name)
    await client.execute_command("FT.CREATE", first.spec.name, "ON", "HASH", "PREFIX", "1",
                                 first.spec.prefix, "SCHEMA", "text", "TEXT", "user_id", "TEXT")
    second = RedisBackend(redis_server.url, prefix=prefix)
    with pytest.raises(IndexSchemaMismatchError) as info:
        await second.search("keep")
    message = str(info.value)
    assert "user_id is TEXT, needs TAG" in message and "index migrate" in message
    assert await client.hget(first.spec.prefix + "k", "text") == "keep this memory"  # untouched
    await second.migrate_index()
    for _ in range(600):  # Redis re-indexes in the background; slow on a loaded machine
        if (await second.search("keep")).hits:
            break
        await asyncio.sleep(0.05)
    assert [h.record.id for h in (await second.search("keep")).hits] == ["k"]
    await first.aclose()
    await second.aclose()


async def test_record_over_the_size_limit_is_refused_and_nothing_is_written(redis_server) -> None:
    backend = RedisBackend(redis_server.url, prefix=fresh_prefix(), max_record_bytes=1000)
    with pytest.raises(RecordTooLargeError, match="max_record_bytes"):
        await backend.add([MemoryRecord(text="fine", id="a"), MemoryRecord(text="x" * 2000, id="b")])
    assert await backend.get("a") is None
    await backend.aclose()


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport", ""])
def test_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        RedisBackend(url)


async def test_unreachable_redis_is_a_typed_error_within_the_connect_timeout() -> None:
    from primitives.localredis import free_port

    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BackendUnavailableError, match="redis start"):
        await backend.search("anything")
    assert loop.time() - start < 5
    health = await backend.health()
    assert health.ok is False and health.detail["error_type"] == "BackendUnavailableError"
    await backend.aclose()


async def test_wrong_password_is_an_authentication_error(tmp_path) -> None:
    server = start_or_fail(tmp_path, password="s3cret")
    try:
        for url in (f"redis://:wrong@127.0.0.1:{server.port}", f"redis://127.0.0.1:{server.port}"):
            backend = RedisBackend(url)
            with pytest.raises(AuthenticationFailedError, match="REDIS_URL"):
                await backend.add([MemoryRecord(text="x")])
            await backend.aclose()
        good = RedisBackend(server.url)
        await good.add([MemoryRecord(text="authenticated write", id="ok")])
        assert (await good.get("ok")).text == "authenticated write"
        await good.aclose()
    finally:
        server.stop()


async def test_plain_redis_without_query_engine_is_refused_with_the_fix(plain_redis_server) -> None:
    prefix = fresh_prefix()
    backend = RedisBackend(plain_redis_server.url, prefix=prefix)
    with pytest.raises(QueryEngineUnavailableError) as info:
        await backend.add([MemoryRecord(text="would be unsearchable")])
    assert "memory-primitives redis start" in str(info.value)
    assert "MEMORY_BACKEND=inmemory" in str(info.value)
    # nothing was written (the server is shared with other tests: look at this prefix only)
    assert [k async for k in backend._client.scan_iter(match=f"{prefix}*")] == []
    health = await backend.health()
    assert health.ok is False and health.detail["error_type"] == "QueryEngineUnavailableError"
    await backend.aclose()


async def test_redis_that_refuses_the_index_command_is_a_configuration_error(redis_server) -> None:
    """An ACL user allowed everything but FT.CREATE: a clear error, and nothing is written."""
    import redis.asyncio as aioredis

    admin = aioredis.from_url(redis_server.url, decode_responses=True)
    await admin.execute_command("ACL", "SETUSER", "nocreate", "on", ">pw", "~*", "&*", "+@all", "-ft.create")
    prefix = fresh_prefix()
    backend = RedisBackend(f"redis://nocreate:pw@127.0.0.1:{redis_server.port}/0", prefix=prefix)
    with pytest.raises(ConfigurationError, match="FT.CREATE"):
        await backend.add([MemoryRecord(text="never stored", id="n")])
    assert await admin.exists(f"{prefix}rec:n") == 0
    await backend.aclose()
    await admin.execute_command("ACL", "DELUSER", "nocreate")
    await admin.aclose()
