"""Memory types with lifetimes and skill execution statistics, on every backend that keeps them."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from primitives.errors import ConfigurationError, InvalidInputError
from primitives.memory import InMemoryBackend, Memory, MemoryRecord, MemoryType, ResilientBackend
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.resilient.outbox import Outbox
from primitives.memory.record import DEFAULT_TTLS, default_ttls_from_env
from tests.redis_server import start_or_fail

_prefixes = itertools.count()


def redis_backend(url: str, **kwargs):
    from primitives.memory.redis_backend import RedisBackend

    return RedisBackend(url, prefix=f"sk{next(_prefixes)}:", **kwargs)


# -- lifetimes --------------------------------------------------------------------------------


def test_default_lifetimes_are_1h_30d_90d_180d() -> None:
    day = 86400.0
    assert DEFAULT_TTLS == {
        MemoryType.WORKING: 3600.0,
        MemoryType.EPISODIC: 30 * day,
        MemoryType.SEMANTIC: 90 * day,
        MemoryType.SKILL: 180 * day,
    }


def test_lifetimes_are_configurable_from_the_environment() -> None:
    ttls = default_ttls_from_env({"MEMORY_TTL_WORKING": "60", "MEMORY_TTL_SKILL": "never", "MEMORY_TTL_SEMANTIC": ""})
    assert ttls[MemoryType.WORKING] == 60.0
    assert ttls[MemoryType.SKILL] is None
    assert ttls[MemoryType.SEMANTIC] == DEFAULT_TTLS[MemoryType.SEMANTIC]
    for bad in ("0", "-5", "soon", "nan", "inf-ish"):
        with pytest.raises(ConfigurationError, match="MEMORY_TTL_EPISODIC"):
            default_ttls_from_env({"MEMORY_TTL_EPISODIC": bad})


def test_memory_from_env_applies_configured_lifetimes(clock) -> None:
    memory = Memory.from_env({"MEMORY_BACKEND": "inmemory", "MEMORY_TTL_EPISODIC": "120"})
    assert memory.backend.default_ttls[MemoryType.EPISODIC] == 120.0
    assert memory.backend.default_ttls[MemoryType.WORKING] == 3600.0


async def test_each_type_expires_after_its_own_default_in_process(clock) -> None:
    backend = InMemoryBackend(clock=clock, default_ttls={MemoryType.WORKING: 10, MemoryType.EPISODIC: 20,
                                                           MemoryType.SEMANTIC: 30, MemoryType.SKILL: None})
    for memory_type in MemoryType:
        await backend.add([MemoryRecord(text=f"a {memory_type.value} fact", id=memory_type.value, memory_type=memory_type)])
    clock.advance(15)
    assert [t.value for t in MemoryType if await backend.get(t.value)] == ["episodic", "semantic", "skill"]
    clock.advance(10)
    assert [t.value for t in MemoryType if await backend.get(t.value)] == ["semantic", "skill"]
    clock.advance(10_000_000)
    assert [t.value for t in MemoryType if await backend.get(t.value)] == ["skill"]


@pytest.mark.integration
async def test_redis_sets_each_type_s_default_lifetime_as_the_key_expiry(redis_server) -> None:
    import redis.asyncio as aioredis

    backend = redis_backend(redis_server.url)
    for memory_type in MemoryType:
        await backend.add([MemoryRecord(text="x", id=memory_type.value, memory_type=memory_type)])
    raw = aioredis.Redis.from_url(redis_server.url)
    for memory_type in MemoryType:
        pttl = await raw.pttl(f"{backend.prefix}rec:default:{memory_type.value}")
        expected_ms = DEFAULT_TTLS[memory_type] * 1000
        assert expected_ms - 60_000 < pttl <= expected_ms, memory_type
    await raw.aclose()
    await backend.aclose()


def test_the_agent_memory_server_mapping_hides_records_past_their_type_s_default() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ttls = {MemoryType.WORKING: 3600.0, MemoryType.EPISODIC: None}
    old = now - timedelta(hours=2)
    working = MemoryRecord(text="x", memory_type="working", created_at=old, updated_at=old)
    episodic = MemoryRecord(text="x", memory_type="episodic", created_at=old, updated_at=old)
    own = MemoryRecord(text="x", memory_type="working", created_at=old, updated_at=old, ttl=3 * 3600.0)
    assert amap.expired(working, now, ttls)
    assert not amap.expired(episodic, now, ttls)
    assert not amap.expired(own, now, ttls)  # a record's own ttl wins over its type's default
    assert not amap.expired(working, now)  # without defaults only the record's own ttl counts


# -- skill statistics -------------------------------------------------------------------------


async def _check_stats_semantics(backend) -> None:
    assert await backend.skill_stats("deploy") is None
    await backend.record_skill_execution("deploy", success=True, duration_s=1.5)
    await backend.record_skill_execution("deploy", success=False, duration_s=0.5)
    stats = await backend.record_skill_execution("deploy", success=True, duration_s=4)
    assert (stats.executions, stats.successes, stats.failures) == (3, 2, 1)
    assert stats.success_rate == pytest.approx(2 / 3)
    assert stats.mean_duration_s == pytest.approx(2.0)
    assert stats.to_dict()["success_rate"] == pytest.approx(2 / 3)
    read = await backend.skill_stats("deploy")
    assert (read.executions, read.successes, read.total_duration_s) == (3, 2, pytest.approx(6.0))
    # kept per namespace and per exact name: hostile names stay apart
    await backend.record_skill_execution("deploy", success=False, duration_s=1, namespace="other")
    assert (await backend.skill_stats("deploy", namespace="other")).executions == 1
    for hostile in ("*", "de*", "deploy:x", "{deploy}", "a b\n", "ünï"):
        assert await backend.skill_stats(hostile) is None
        await backend.record_skill_execution(hostile, success=True, duration_s=0)
        assert (await backend.skill_stats(hostile)).executions == 1
    assert (await backend.skill_stats("deploy")).executions == 3
    for bad in ({"name": ""}, {"name": 3}, {"success": 1}, {"duration_s": -1}, {"duration_s": math.nan},
                {"duration_s": math.inf}, {"duration_s": "2"}, {"duration_s": True}):
        args = {"name": "deploy", "success": True, "duration_s": 1.0, **bad}
        with pytest.raises(InvalidInputError):
            await backend.record_skill_execution(args.pop("name"), **args)
    assert (await backend.skill_stats("deploy")).executions == 3  # nothing recorded by bad calls
    for bad_name in ("", "  ", 3, None):
        with pytest.raises(InvalidInputError):
            await backend.skill_stats(bad_name)


async def test_in_process_skill_statistics(clock) -> None:
    await _check_stats_semantics(InMemoryBackend(clock=clock))


async def test_in_process_skill_statistics_live_as_long_as_skills(clock) -> None:
    backend = InMemoryBackend(clock=clock, default_ttls={MemoryType.SKILL: 100})
    await backend.record_skill_execution("s", success=True, duration_s=1)
    clock.advance(60)
    await backend.record_skill_execution("s", success=True, duration_s=1)  # re-arms the lifetime
    clock.advance(60)
    assert (await backend.skill_stats("s")).executions == 2
    clock.advance(41)
    assert await backend.skill_stats("s") is None


async def test_in_process_concurrent_recorders_lose_no_update() -> None:
    backend = InMemoryBackend()
    await asyncio.gather(*(
        backend.record_skill_execution("s", success=i % 3 == 0, duration_s=0.25) for i in range(3000)
    ))
    stats = await backend.skill_stats("s")
    assert (stats.executions, stats.successes, stats.total_duration_s) == (3000, 1000, 750.0)


@pytest.mark.integration
async def test_redis_skill_statistics(plain_redis_server) -> None:
    backend = redis_backend(plain_redis_server.url)  # statistics need no Query Engine
    await _check_stats_semantics(backend)
    await backend.aclose()


@pytest.mark.integration
async def test_redis_concurrent_recorders_on_four_connections_lose_no_update(plain_redis_server) -> None:
    prefix = f"skc{next(_prefixes)}:"
    from primitives.memory.redis_backend import RedisBackend

    backends = [RedisBackend(plain_redis_server.url, prefix=prefix) for _ in range(4)]
    results = []

    async def worker(backend, n: int) -> None:  # 10 workers per client: within its pool of 50
        for i in range(n):
            results.append(await backend.record_skill_execution("s", success=i % 4 == 0, duration_s=0.5))

    await asyncio.gather(*(worker(b, 25) for b in backends for _ in range(10)))
    stats = await backends[0].skill_stats("s")
    assert (stats.executions, stats.successes, stats.total_duration_s) == (1000, 280, 500.0)
    # every recorder saw the totals its own increment produced: 1..1000, each once
    assert sorted(r.executions for r in results) == list(range(1, 1001))
    for b in backends:
        await b.aclose()


@pytest.mark.integration
async def test_redis_skill_statistics_expire_with_the_skill_lifetime(plain_redis_server) -> None:
    import redis.asyncio as aioredis

    from primitives.memory.redis_backend.skills import skill_key

    backend = redis_backend(plain_redis_server.url, default_ttls={MemoryType.SKILL: 0.3})
    await backend.record_skill_execution("s", success=True, duration_s=1)
    raw = aioredis.Redis.from_url(plain_redis_server.url)
    assert 0 < await raw.pttl(skill_key(backend.prefix, "default", "s")) <= 300
    await asyncio.sleep(0.5)
    assert await backend.skill_stats("s") is None
    forever = redis_backend(plain_redis_server.url, default_ttls={MemoryType.SKILL: None})
    await forever.record_skill_execution("s", success=True, duration_s=1)
    assert await raw.pttl(skill_key(forever.prefix, "default", "s")) == -1
    await raw.aclose()
    await backend.aclose()
    await forever.aclose()


@pytest.mark.integration
async def test_resilient_wrapper_records_on_the_primary_and_on_the_fallback_in_an_outage(
    tmp_path: Path,
) -> None:
    from primitives.memory.resilient.breaker import CircuitBreaker
    from primitives.memory.redis_backend import RedisBackend

    server = start_or_fail(tmp_path / "redis", modules=False)
    backend = ResilientBackend(
        RedisBackend(server.url, prefix="rs:", socket_connect_timeout=0.25, socket_timeout=1.0),
        outbox=Outbox(tmp_path / "outbox.sqlite3"),
        breaker=CircuitBreaker(reset_timeout=0.2, max_reset_timeout=0.2),
    )
    try:
        assert backend.supports_skill_stats
        await backend.record_skill_execution("s", success=True, duration_s=1)
        assert (await backend.primary.skill_stats("s")).executions == 1
        server.kill()
        stats = await backend.record_skill_execution("s", success=False, duration_s=1)
        assert stats.executions == 1  # the fallback's own count: an outage's executions are not replayed
        assert (await backend.skill_stats("s")).failures == 1
    finally:
        server.stop()
        await backend.aclose()


async def test_a_backend_without_skill_statistics_names_the_fix() -> None:
    from primitives.memory.backend import MemoryBackend

    class Bare(InMemoryBackend):
        name = "bare"
        supports_skill_stats = False
        record_skill_execution = MemoryBackend.record_skill_execution
        skill_stats = MemoryBackend.skill_stats

    with pytest.raises(NotImplementedError, match="in-memory or Redis"):
        await Bare().record_skill_execution("s", success=True, duration_s=1)


async def test_memory_facade_records_skill_executions_in_its_namespace() -> None:
    memory = Memory(InMemoryBackend(), namespace="team")
    await memory.remember("To deploy, run make deploy", memory_type="skill", metadata={"skill": "deploy"})
    await memory.record_skill_execution("deploy", success=True, duration_s=2.0)
    stats = await memory.record_skill_execution("deploy", success=False, duration_s=4.0)
    assert (stats.namespace, stats.executions, stats.success_rate, stats.mean_duration_s) == ("team", 2, 0.5, 3.0)
    assert (await memory.skill_stats("deploy")).executions == 2
    assert await memory.skill_stats("deploy", namespace="default") is None
