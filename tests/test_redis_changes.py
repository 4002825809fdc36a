"""MemoryBackend.changes() on Redis against the in-process oracle: the same changes, each once, in
the order the store received them, paged with any page size (many writes share a microsecond on
the server), tombstones, rewrites, late writes with old timestamps, expiry and damaged records."""

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


def view(entries):
    return sorted((type(e.change).__name__, e.change.namespace, e.change.id, e.change.updated_at, getattr(e.change, "text", None))
                  for e in entries)


def key(position):
    return (position[0], position[1], position[2])


async def all_pages(backend, size: int):
    out, after = [], None
    while True:
        page = await backend.changes(after, limit=size)
        if not page:
            return out
        assert len(page) <= size
        out += page
        after = page[-1].position


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
    assert any(isinstance(e.change, Tombstone) for e in await all_pages(oracle, 10_000))
    whole = await all_pages(redis, 10_000)
    assert [key(e.position) for e in whole] == sorted(key(e.position) for e in whole)  # in position order
    assert view(whole) == want
    for size in (1, 7, 39, 40, 41, 120, 299, 1000):
        paged = await all_pages(redis, size)
        assert [e.position for e in paged] == [e.position for e in whole], size  # each once, none skipped


async def test_a_late_write_with_an_old_timestamp_comes_after_the_position_already_read(pair):
    """An outbox replayed after an outage, or a writer whose clock runs behind, writes a version
    with an old updated_at: it is still listed after whatever an exporter already read."""
    for backend in pair:
        await backend.add([MemoryRecord(text="now", id="a")])
        [entry] = await backend.changes(None)
        late = MemoryRecord(text="late", id="b", created_at=T0 - timedelta(days=2), updated_at=T0 - timedelta(days=2), ttl=float("inf"))
        assert await backend.put_if_newer([late]) == 1
        await backend.delete_if_older({"a": T0 - timedelta(days=1)})  # an old delete: a is newer, stays
        later = await backend.changes(entry.position)
        assert [(type(e.change).__name__, e.change.id) for e in later] == [("MemoryRecord", "b")]


async def test_rewrites_move_records_and_deletes_leave_tombstones(pair):
    redis, oracle = pair
    for backend in pair:
        await backend.add([MemoryRecord(text=f"v1 {i}", id=str(i)) for i in range(20)])
    first = await all_pages(redis, 1000)
    cursor = first[-1].position
    await asyncio.sleep(0.002)
    await redis.add([MemoryRecord(text="v2", id="3")])
    await asyncio.sleep(0.002)
    await redis.delete(["4"])
    later = await redis.changes(cursor, limit=100)
    assert [(type(e.change).__name__, e.change.id) for e in later] == [("MemoryRecord", "3"), ("Tombstone", "4")]
    everything = await redis.changes(None, limit=1000)
    assert everything[-2].change.text == "v2"  # moved, not duplicated
    assert len(everything) == 20  # 19 records, 1 tombstone


async def test_expired_records_leave_the_log_and_damaged_ones_are_skipped(pair, caplog):
    redis, _ = pair
    await redis.add([MemoryRecord(text="short", id="short", ttl=0.2), MemoryRecord(text="ok", id="ok"),
                     MemoryRecord(text="bad", id="bad")])
    await redis._client.hset(redis._key("default", "bad"), "created_at_us", "not a number")
    await asyncio.sleep(0.4)
    changes = await redis.changes(None, limit=100)
    assert [e.change.id for e in changes] == ["ok"]
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
