"""LocalReplica: an in-process copy kept warm from the change feed, in process and against a real
Redis (Query Engine) shared by two agents."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from primitives.errors import (
    ChangeFeedGapError,
    ConfigurationError,
    InvalidStreamIdError,
)
from primitives.memory import InMemoryBackend, Memory, MemoryRecord
from primitives.memory.replica import LocalReplica
from primitives.redis_connection import connect
from primitives.sync.feed import InMemoryChangeFeed
from primitives.sync.feed_redis import RedisChangeFeed


@pytest.fixture
async def redis_agents(redis_server) -> AsyncIterator[Callable[..., tuple[Memory, Memory]]]:
    """Two agents (two Memory objects, two RedisBackends) on one Redis, one prefix per test."""
    from primitives.memory.redis_backend import RedisBackend

    made: list[Any] = []

    def build(**feed_kw: Any) -> tuple[Memory, Memory]:
        prefix = f"t-{uuid.uuid4().hex[:8]}:"
        pair = []
        for agent in ("agent-a", "agent-b"):
            client = connect(redis_server.url, decode_responses=True)
            backend = RedisBackend(redis_server.url, prefix=prefix)
            memory = Memory(backend, feed=RedisChangeFeed(client, prefix=prefix, **feed_kw), agent_id=agent)
            made.append((memory, client))
            pair.append(memory)
        return pair[0], pair[1]

    yield build
    for i, (memory, client) in enumerate(made):
        if i % 2 == 0:
            await memory.backend.drop()
        await memory.aclose()
        await client.delete(memory.feed.key)
        await client.aclose()


@pytest.fixture(params=["in-memory", pytest.param("redis", marks=pytest.mark.integration)])
def agents(request) -> Callable[..., tuple[Memory, Memory]]:
    if request.param == "in-memory":
        def build(**feed_kw: Any) -> tuple[Memory, Memory]:
            backend, feed = InMemoryBackend(), InMemoryChangeFeed(**feed_kw)
            return Memory(backend, feed=feed, agent_id="agent-a"), Memory(backend, feed=feed, agent_id="agent-b")
        return build
    return request.getfixturevalue("redis_agents")


async def texts(backend: InMemoryBackend, ids: list[str], namespace: str = "default") -> dict[str, str | None]:
    out = {}
    for i in ids:
        record = await backend.get(i, namespace=namespace)
        out[i] = record.text if record else None
    return out


async def test_replica_catches_up_then_follows_both_agents(agents) -> None:
    alice, bob = agents()
    await alice.add([MemoryRecord(text=f"fact {i}", id=f"f{i}", user_id="u1") for i in range(50)])
    async with LocalReplica(bob) as replica:
        await replica.wait_for(await bob.feed.last_position(), timeout=60)
        assert await replica.backend.count() == 50
        assert (await replica.backend.get("f7")).text == "fact 7"
        # live: a new memory by alice, a replacement and a delete by bob
        await alice.remember("the new one", id="new", user_id="u2")
        await bob.remember("fact 3, corrected", id="f3", user_id="u1")
        await bob.delete(["f4"])
        await replica.wait_for(await bob.feed.last_position(), timeout=60)
        assert await texts(replica.backend, ["new", "f3", "f4", "f5"]) == {
            "new": "the new one", "f3": "fact 3, corrected", "f4": None, "f5": "fact 5"
        }
        replicated = await replica.backend.get("f3")
        source = await alice.get("f3")
        assert (replicated.updated_at, replicated.created_at, replicated.user_id) == (
            source.updated_at, source.created_at, source.user_id
        )
        assert replica.applied == 53 and replica.error is None
        hits = await replica.backend.search("corrected")
        assert [h.record.id for h in hits.hits] == ["f3"]


async def test_replica_resumes_from_its_position_with_the_same_local_backend(agents) -> None:
    alice, bob = agents()
    await alice.add([MemoryRecord(text=f"a{i}", id=f"a{i}") for i in range(10)])
    replica = LocalReplica(bob)
    await replica.start()
    await replica.wait_for(await bob.feed.last_position(), timeout=60)
    saved, local = replica.position, replica.backend
    await replica.aclose()
    # offline: changes the replica has not seen
    await alice.delete(["a0", "a1"])
    await alice.add([MemoryRecord(text=f"b{i}", id=f"b{i}") for i in range(5)])
    async with LocalReplica(bob, after=saved, local=local) as resumed:
        await resumed.wait_for(await bob.feed.last_position(), timeout=60)
        assert resumed.applied == 7  # only the changes after the saved position
    assert await local.count() == 13
    assert await local.get("a0") is None and (await local.get("b4")).text == "b4"


async def test_an_older_event_does_not_overwrite_a_newer_copy(agents) -> None:
    alice, bob = agents()
    await alice.remember("version 1", id="doc")
    await alice.remember("version 2", id="doc")
    # both events are applied by fetching the record: the replica ends on the newest version
    async with LocalReplica(bob) as replica:
        await replica.wait_for(await bob.feed.last_position(), timeout=60)
        assert (await replica.backend.get("doc")).text == "version 2"
        newest = await replica.backend.get("doc")
        # replaying a delete stamped before that version leaves it in place (last writer wins)
        assert await replica.backend.delete_if_older({"doc": newest.updated_at.replace(year=2000)}) == 0


async def test_replica_of_one_namespace(agents) -> None:
    alice, bob = agents()
    await alice.remember("in a", id="x1", namespace="team-a")
    await alice.remember("in b", id="x2", namespace="team-b")
    last = await alice.remember("in a again", id="x3", namespace="team-a")
    async with LocalReplica(bob, namespace="team-a") as replica:
        await replica.wait_for(await bob.feed.last_position(), timeout=60)
        assert await texts(replica.backend, ["x1", "x2", "x3"], "team-a") == {"x1": "in a", "x2": None, "x3": last.text}
        assert await texts(replica.backend, ["x2"], "team-b") == {"x2": None}


async def test_replica_start_refuses_trimmed_future_and_malformed_positions(agents) -> None:
    alice, bob = agents(maxlen=10)
    first = None
    for i in range(30):
        await alice.remember(f"m{i}", id=f"m{i}")
        if first is None:
            first = await alice.feed.last_position()
    replica = LocalReplica(bob, after=first)
    with pytest.raises(ChangeFeedGapError):
        await replica.start()
    await replica.aclose()
    ms = int((await alice.feed.last_position()).split("-")[0])
    replica = LocalReplica(bob, after=f"{ms + 10_000}-0")
    with pytest.raises(InvalidStreamIdError):
        await replica.start()
    await replica.aclose()
    with pytest.raises(InvalidStreamIdError):
        LocalReplica(bob, after="yesterday")
    # a resync from "0" copies what the feed keeps
    async with LocalReplica(bob) as replica:
        await replica.wait_for(await bob.feed.last_position(), timeout=60)
        assert (await replica.backend.get("m29")).text == "m29"


async def test_replica_needs_a_feed() -> None:
    with pytest.raises(ConfigurationError):
        LocalReplica(Memory(InMemoryBackend()))
    with pytest.raises(ConfigurationError):
        LocalReplica(source=InMemoryBackend())
