"""One damaged record costs exactly that record (a real Redis 8.2 with the Query Engine).

Each kind of damage is written into a real store with raw redis-py, the way a bug in another
client, a hand edit or a bad restore would: bytes that are not UTF-8, JSON that does not parse,
a timestamp that is not a number, a missing field, a NaN in a stored vector, a key of the wrong
Redis type, a bad working-memory item. Searches skip the damaged records, say so
(``SearchResult.skipped``, a warning naming the key, the OTel counter) and still return ``limit``
good hits; ``get`` raises ``CorruptRecordError`` naming the key; ``get_messages`` skips the item.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import struct
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from primitives.embeddings.base import Embedder
from primitives.errors import CorruptRecordError
from primitives.memory import MemoryRecord, Message
from primitives.memory.redis_backend import RedisBackend
from primitives.memory.redis_backend.keys import record_key, session_key

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


class HashEmbedder(Embedder):
    """A deterministic 8-dims bag-of-words embedder: no model to load."""

    def __init__(self) -> None:
        super().__init__(model="hash-8", dims=8)

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        out = []
        for text in texts:
            v = [0.01] * 8
            for word in text.lower().split():
                v[hashlib.sha256(word.encode()).digest()[0] % 8] += 1.0
            out.append(v)
        return out


@pytest.fixture
async def store(redis_server):
    backend = RedisBackend(redis_server.url, prefix=f"dmg{next(_prefixes)}:", working_memory_size=10)
    raw = aioredis.from_url(redis_server.url, decode_responses=False)
    yield backend, raw
    await backend.drop()
    await backend.aclose()
    await raw.aclose()


def key_of(backend: RedisBackend, id: str, namespace: str = "default") -> str:
    return record_key(backend.spec.prefix, namespace, id)


# damage kind -> how to write it over a stored record (all keep the text searchable)
DAMAGE = {
    "text not UTF-8": lambda k: ("hset", k, "text", b"apple apple apple apple caf\xe9"),
    "metadata not JSON": lambda k: ("hset", k, "metadata", b"{not json"),
    "created_at_us not a number": lambda k: ("hset", k, "created_at_us", b"yesterday"),
    "id missing": lambda k: ("hdel", k, "id"),
    "NaN in the vector": lambda k: ("hset", k, "vector", struct.pack("<3f", 1.0, math.nan, 0.0)),
    "user_id not UTF-8": lambda k: ("hset", k, "user_id", b"\xff\xfe"),
    "topics not JSON": lambda k: ("hset", k, "topics", b"[unterminated"),
    "ttl not a number": lambda k: ("hset", k, "ttl", b"forever"),
    "memory_type unknown": lambda k: ("hset", k, "memory_type", b"dream"),
}


async def damage(raw: aioredis.Redis, kind: str, key: str) -> None:
    command, *args = DAMAGE[kind](key)
    await getattr(raw, command)(*args)


async def seed(backend: RedisBackend, n_good: int, n_bad: int) -> tuple[list[str], list[str]]:
    """``n_good`` records that mention "apple" once and ``n_bad`` that mention it four times
    (so damaged records rank first), all of user u."""
    good = [MemoryRecord(text=f"apple note {i}", id=f"g{i}", user_id="u") for i in range(n_good)]
    bad = [MemoryRecord(text="apple apple apple apple", id=f"b{i}", user_id="u", topics=("t",),
                        embedding=(1.0, 0.0, 0.0)) for i in range(n_bad)]
    await backend.add(good + bad)
    return [r.id for r in good], [r.id for r in bad]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
async def test_each_damage_kind_costs_only_its_record(store, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    backend, raw = store
    good, (bad,) = await seed(backend, 6, 1)
    await damage(raw, kind, key_of(backend, bad))
    caplog.set_level(logging.WARNING, logger="primitives.memory")

    result = await backend.search("apple", limit=3)
    assert len(result.hits) == 3 and {h.record.id for h in result.hits} <= set(good)
    assert result.skipped == 1
    assert any(key_of(backend, bad) in r.getMessage() and "memory-primitives repair" in r.getMessage()
               for r in caplog.records)
    full = await backend.search("apple", limit=50, filter={"user_id": "u"})
    assert sorted(h.record.id for h in full.hits) == sorted(good) and full.skipped == 1

    with pytest.raises(CorruptRecordError) as info:
        await backend.get(bad)
    assert info.value.key == key_of(backend, bad) and info.value.reason
    assert "memory-primitives repair" in str(info.value)
    for id in good:
        assert (await backend.get(id)).text.startswith("apple note")


async def test_many_damaged_records_still_leave_limit_good_hits(store) -> None:
    """25 damaged records rank above every good one: further pages are fetched until 10 good
    hits are found (the first page had none)."""
    backend, raw = store
    good, bad = await seed(backend, 30, 25)
    kinds = sorted(DAMAGE)
    for i, id in enumerate(bad):
        await damage(raw, kinds[i % len(kinds)], key_of(backend, id))
    result = await backend.search("apple", limit=10)
    assert len(result.hits) == 10 and {h.record.id for h in result.hits} <= set(good)
    assert 10 <= result.skipped <= 25  # each damaged record reached is counted once
    everything = await backend.search("apple", limit=100)
    assert len(everything.hits) == 30 and everything.skipped == 25


async def test_a_record_key_of_the_wrong_type_is_a_typed_error(store) -> None:
    backend, raw = store
    await seed(backend, 3, 0)
    for kind, write in [("string", raw.set), ("list", raw.rpush)]:
        key = key_of(backend, f"wrong-{kind}")
        await write(key, "not a hash")
        with pytest.raises(CorruptRecordError, match=f"Redis {kind}, not a hash") as info:
            await backend.get(f"wrong-{kind}")
        assert info.value.key == key
    assert len((await backend.search("apple")).hits) == 3  # the index ignores non-hash keys
    # a write to that id replaces the damaged value (the newest version of the record wins)
    await backend.add([MemoryRecord(text="apple fixed", id="wrong-string")])
    assert (await backend.get("wrong-string")).text == "apple fixed"


async def test_a_record_whose_timestamp_the_index_refuses_is_found_by_get_and_scan(store) -> None:
    backend, raw = store
    await seed(backend, 3, 1)
    await raw.hset(key_of(backend, "b0"), "created_at", b"not-a-number")  # NUMERIC field
    assert {h.record.id for h in (await backend.search("apple", limit=10)).hits} == {"g0", "g1", "g2"}
    with pytest.raises(CorruptRecordError, match="index leaves the record out"):
        await backend.get("b0")
    report = await backend.scan_damaged()
    assert report.damaged == 1 and report.first[0]["key"] == key_of(backend, "b0")
    assert report.index_failures >= 1


async def test_a_hash_at_another_records_key_or_with_other_tags_is_damage(store) -> None:
    """A hash moved by hand to another key, or whose TAG fields no longer encode its values,
    would let a filter return it under a name it does not carry: direct reads refuse it."""
    backend, raw = store
    await backend.add([MemoryRecord(text="apple", id="a", user_id="alice")])
    await raw.copy(key_of(backend, "a"), key_of(backend, "a", namespace="acme"))
    with pytest.raises(CorruptRecordError, match="belongs at another key"):
        await backend.get("a", namespace="acme")
    await raw.hset(key_of(backend, "a"), "user_id", "mallory")
    with pytest.raises(CorruptRecordError, match="tag_user_id"):
        await backend.get("a")


async def test_damaged_working_memory_items_are_skipped(store, caplog: pytest.LogCaptureFixture) -> None:
    backend, raw = store
    await backend.append_messages("s", [Message("user", "one"), Message("user", "two")])
    key = session_key(backend.prefix, "default", "s")
    for item in (b"\xff\xfe", b"{broken", b'{"role": "", "content": "x", "created_at": "1"}', b"[]"):
        await raw.rpush(key, item)
    await backend.append_messages("s", [Message("assistant", "three")])
    caplog.set_level(logging.WARNING, logger="primitives.memory")
    assert [m.content for m in await backend.get_messages("s")] == ["one", "two", "three"]
    assert sum(key in r.getMessage() for r in caplog.records) == 4
    assert [m.content for m in await backend.get_messages("s", limit=1)] == ["three"]
    await raw.delete(key)
    await raw.set(key, "a string")
    assert await backend.get_messages("s") == []
    with pytest.raises(CorruptRecordError, match="not a list"):
        await backend.append_messages("s", [Message("user", "lost?")])
    assert await raw.get(key) == b"a string"  # nothing overwritten


async def test_vector_and_hybrid_search_skip_a_nan_vector(redis_server) -> None:
    backend = RedisBackend(redis_server.url, prefix=f"dmgv{next(_prefixes)}:", embedder=HashEmbedder())
    raw = aioredis.from_url(redis_server.url)
    try:
        # t1 embeds exactly as the query does, so it heads the vector ranking (the others tie
        # among themselves, and RediSearch orders ties freely): its damage is always met
        await backend.add([MemoryRecord(text="green tea" if i == 1 else f"green tea number {i}", id=f"t{i}")
                           for i in range(8)])
        await raw.hset(key_of(backend, "t0"), "vector", struct.pack("<8f", *([math.nan] * 8)))
        await raw.hset(key_of(backend, "t1"), "text", b"green tea \xff")
        for mode in ("vector", "hybrid"):
            result = await backend.search("green tea", limit=6, mode=mode)
            ids = {h.record.id for h in result.hits}
            assert len(ids) == 6 and not ids & {"t0", "t1"}, (mode, ids)
            assert result.skipped >= 1 and all(math.isfinite(h.score) for h in result.hits)
        with pytest.raises(CorruptRecordError, match="NaN"):
            await backend.get("t0")
    finally:
        await backend.drop()
        await backend.aclose()
        await raw.aclose()


async def test_damaged_skill_statistics_are_a_typed_error(store) -> None:
    from primitives.memory.redis_backend.skills import skill_key

    backend, raw = store
    await backend.record_skill_execution("s", success=True, duration_s=1.0)
    await raw.hset(skill_key(backend.prefix, "default", "s"), "executions", b"many")
    with pytest.raises(CorruptRecordError):
        await backend.skill_stats("s")


async def test_a_search_survives_its_pooled_connection_being_killed(store) -> None:
    """Keyword searches go out pre-encoded on a connection of the backend's pool
    (``search.send_packed``): a connection the server dropped between two searches is replaced
    once, as ``execute_command`` does, and concurrent searches each take their own connection."""
    import asyncio

    backend, raw = store
    await seed(backend, 5, 0)
    first = await backend.search("apple", limit=10, filter={"user_id": "u"})
    assert len(first.hits) == 5
    killed = await raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1  # the backend's pooled connection(s)
    again = await backend.search("apple", limit=10, filter={"user_id": "u"})
    # the five records tie on BM25 score, and RediSearch orders ties as it likes: compare by id
    assert sorted((h.record for h in again.hits), key=lambda r: r.id) == sorted((h.record for h in first.hits), key=lambda r: r.id)
    many = await asyncio.gather(*(backend.search("apple note", limit=10, filter={"user_id": "u"}) for _ in range(20)))
    assert all(sorted(h.record.id for h in r.hits) == sorted(h.record.id for h in first.hits) for r in many)
