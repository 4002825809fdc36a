"""MemoryBackend.changes() on Redis against the in-process oracle: the same changes in the same
order, paged with any page size, with many records sharing one microsecond (a batch), tombstones,
rewrites, expiry and damaged records."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import pytest

from primitives.memory.changes import Tombstone
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import MemoryRecord
from primitives.memory.redis_backend import RedisBackend
from tests.sync_contract import HOSTILE

pytestmark = pytest.mark.integration

# recent enough that tombstones are kept (tombstone_ttl: 30 days after the delete)
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def fresh_prefix() -> str:
    return f"chg{random.randrange(10**9)}:"


def view(changes):
    return [(type(c).__name__, c.namespace, c.id, c.updated_at, getattr(c, "text", None)) for c in changes]


async def all_pages(backend, size: int):
    out, after = [], None
    while True:
        page = await backend.changes(after, limit=size)
        if not page:
            return out
        assert len(page) <= size
        out += page
        last = page[-1]
        after = (last.updated_at, last.namespace, last.id)


@pytest.fixture
async def pair(redis_server):
    redis = RedisBackend(redis_server.url, prefix=fresh_prefix())
    oracle = InMemoryBackend()
    yield redis, oracle
    await redis.drop()
    await redis.aclose()


async def test_pages_of_every_size_match_the_oracle_with_shared_microseconds(pair):
    redis, oracle = pair
    rng = random.Random(7)
    # restored records keep their timestamps: whole groups share one microsecond, across pages
    records = []
    for i in range(300):
        at = T0 + timedelta(microseconds=i // 40)
        ns, id = rng.choice(HOSTILE[:8]), f"{rng.choice(HOSTILE)}-{i}"
        records.append(MemoryRecord(text=f"t{i}", id=id, namespace=ns, created_at=at, updated_at=at, ttl=float("inf")))
    for backend in pair:
        assert await backend.put_if_newer(records) == 300
        await backend.delete_if_older({records[5].id: T0 + timedelta(microseconds=3)}, namespace=records[5].namespace)
        await backend.delete_if_older({"never-existed": T0 + timedelta(microseconds=3)}, namespace="n")
    want = view(await all_pages(oracle, 10_000))
    assert len(want) == 301
    assert any(isinstance(c, Tombstone) for c in await all_pages(oracle, 10_000))
    for size in (1, 7, 39, 40, 41, 120, 299, 1000):
        got = view(await all_pages(redis, size))
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        assert got == want, (size, len(got), first, got[first - 1:first + 2], want[first - 1:first + 2])


async def test_rewrites_move_records_and_deletes_leave_tombstones(pair):
    redis, oracle = pair
    for backend in pair:
        await backend.add([MemoryRecord(text=f"v1 {i}", id=str(i)) for i in range(20)])
    first = await all_pages(redis, 1000)
    cursor = (first[-1].updated_at, first[-1].namespace, first[-1].id)
    await asyncio.sleep(0.002)
    await redis.add([MemoryRecord(text="v2", id="3")])
    await redis.delete(["4"])
    later = await redis.changes(cursor, limit=100)
    assert [(type(c).__name__, c.id) for c in later] == [("MemoryRecord", "3"), ("Tombstone", "4")]
    assert (await redis.changes(None, limit=1000))[-2].text == "v2"  # moved, not duplicated
    assert len(await redis.changes(None, limit=1000)) == 20  # 19 records, 1 tombstone


async def test_expired_records_leave_the_log_and_damaged_ones_are_skipped(pair, caplog):
    redis, _ = pair
    await redis.add([MemoryRecord(text="short", id="short", ttl=0.2), MemoryRecord(text="ok", id="ok"),
                     MemoryRecord(text="bad", id="bad")])
    await redis._client.hset(redis._key("default", "bad"), "created_at_us", "not a number")
    await asyncio.sleep(0.4)
    changes = await redis.changes(None, limit=100)
    assert [c.id for c in changes] == ["ok"]
    assert "bad" in caplog.text
    members = await redis._client.zrange(redis._change_log, 0, -1)
    assert not any(m.endswith(b":short") for m in members)  # pruned


async def test_bad_positions_are_typed_errors(pair):
    from primitives.errors import InvalidInputError

    redis, _ = pair
    for after in ("x", (T0,), (datetime(2026, 1, 1), "", ""), (T0, 1, ""), (T0, "", None)):
        with pytest.raises(InvalidInputError):
            await redis.changes(after)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await redis.changes(None, limit=0)
