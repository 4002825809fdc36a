"""The change feed: one contract suite for the in-process feed, Redis and a 3-master Redis Cluster;
Redis-specific checks (one round trip per batch, the stream's fields, hostile prefixes, pending
events across a server restart, a subscriber that reconnects); Memory's announcements."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from primitives.errors import (
    BackendUnavailableError,
    ChangeFeedGapError,
    ConfigurationError,
    InvalidInputError,
    InvalidStreamIdError,
    PrimitivesError,
)
from primitives.tooling.localredis import LocalRedis
from primitives.memory import InMemoryBackend, Memory, MemoryRecord
from primitives.redis_connection import connect
from primitives.sync.feed import (
    ChangeEvent,
    ChangeFeed,
    ChangeSubscription,
    START,
    InMemoryChangeFeed,
    parse_position,
)
from primitives.sync.feed_redis import RedisChangeFeed
from primitives.validation import MAX_LIMIT

HOSTILE = ["*", "?", "[a-z]", "a:b", "{tag}", "}{", "a b", "line\nbreak", "ünï-💬", '"quoted"\\', "x]*?"]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(i: int, *, origin: str = "agent-a", namespace: str = "ns", op: str = "upsert", **kw: Any) -> ChangeEvent:
    return ChangeEvent(
        kw.get("id", f"rec-{i}"), op, namespace, kw.get("user_id"), kw.get("memory_type", "episodic"),
        T0 + timedelta(microseconds=i), origin,
    )


@pytest.fixture
async def redis_client(plain_redis_server) -> AsyncIterator[Any]:
    client = connect(plain_redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(
    params=[
        "in-memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def make(request) -> Callable[..., ChangeFeed]:
    """Builds the feed under test; Redis feeds get a prefix of their own per test."""
    if request.param == "in-memory":
        return lambda **kw: InMemoryChangeFeed(**kw)
    client = request.getfixturevalue("redis_client" if request.param == "redis" else "cluster_client")
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    return lambda **kw: RedisChangeFeed(client, prefix=kw.pop("prefix", prefix), **kw)


async def take(subscription: ChangeSubscription, n: int, timeout: float = 30.0) -> list[ChangeEvent]:
    """The next ``n`` events (a guard timeout, not a timing assertion)."""
    out: list[ChangeEvent] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await subscription.__anext__())
    return out


async def nothing_more(subscription: ChangeSubscription, feed: ChangeFeed) -> None:
    """Publish a marker from another origin and check it is the very next event delivered."""
    (marker,) = await feed.publish([event(999_999, origin="marker", namespace="marker-ns", id="marker")])
    (got,) = await take(subscription, 1)
    assert got.position == marker and got.id == "marker"


# --- contract -------------------------------------------------------------------------------


async def test_publish_read_round_trip_with_hostile_strings(make) -> None:
    feed = make()
    events = [
        ChangeEvent(f"id{s}", "upsert" if i % 2 else "delete", f"ns{s}", s if i % 3 else None, "semantic",
                    T0 + timedelta(seconds=i), f"origin{s}")
        for i, s in enumerate(HOSTILE)
    ]
    positions = await feed.publish(events)
    assert len(positions) == len(events)
    keys = [parse_position(p) for p in positions]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    read = await feed.read("0")
    assert [e.position for e in read] == positions
    for got, sent in zip(read, events):
        assert (got.id, got.op, got.namespace, got.user_id, got.memory_type, got.updated_at, got.origin) == (
            sent.id, sent.op, sent.namespace, sent.user_id, sent.memory_type, sent.updated_at, sent.origin
        )
        assert got.updated_at.tzinfo is UTC
    assert await feed.last_position() == positions[-1]
    assert [e.position for e in await feed.read(positions[2], limit=3)] == positions[3:6]
    assert await feed.read(positions[-1]) == []


async def test_empty_feed(make) -> None:
    feed = make()
    assert await feed.last_position() == "0-0"
    assert await feed.read("0") == []
    assert await feed.publish([]) == []


async def test_subscribe_from_start_catches_up_then_follows_live(make) -> None:
    feed = make()
    before = await feed.publish([event(i) for i in range(5)])
    async with feed.subscribe(after="0") as sub:
        assert sub.position == "0"
        first = await take(sub, 5)
        assert [e.position for e in first] == before
        live = await feed.publish([event(i) for i in range(5, 8)])
        assert [e.position for e in await take(sub, 3)] == live
        assert sub.position == live[-1]
        await nothing_more(sub, feed)


async def test_default_subscription_sees_only_events_after_its_start(make) -> None:
    feed = make()
    await feed.publish([event(0)])
    async with feed.subscribe() as sub:  # entering starts it: "$" is resolved now
        assert sub.position == await feed.last_position()
        (new,) = await feed.publish([event(1)])
        (got,) = await take(sub, 1)
        assert got.position == new and got.id == "rec-1"


async def test_resume_from_position_neither_repeats_nor_misses(make) -> None:
    feed = make()
    await feed.publish([event(i) for i in range(10)])
    async with feed.subscribe(after="0") as sub:
        await take(sub, 4)
        saved = sub.position
    rest = await feed.publish([event(i) for i in range(10, 13)])
    async with feed.subscribe(after=saved) as sub:
        got = await take(sub, 9)
    assert [e.id for e in got] == [f"rec-{i}" for i in range(4, 13)]
    assert [e.position for e in got[-3:]] == rest


async def test_filters_skip_but_advance_the_position(make) -> None:
    feed = make()
    async with feed.subscribe(namespace="ns", exclude_origin="me") as sub:
        positions = await feed.publish(
            [event(0, origin="me"), event(1, namespace="other"), event(2), event(3, origin="me")]
        )
        (got,) = await take(sub, 1)
        assert got.id == "rec-2" and got.position == positions[2]
        (last,) = await feed.publish([event(4)])
        (got,) = await take(sub, 1)
        assert got.position == last and sub.position == last


async def test_concurrent_publishing_during_catch_up_delivers_each_event_once(make) -> None:
    feed = make()
    sent = await feed.publish([event(i) for i in range(300)])

    async def publisher() -> None:
        for i in range(300, 600, 10):
            sent.extend(await feed.publish([event(j) for j in range(i, i + 10)]))
            await asyncio.sleep(0)

    async with feed.subscribe(after="0") as sub:
        task = asyncio.create_task(publisher())
        got = await take(sub, 600)
        await task
        assert [e.position for e in got] == sent
        await nothing_more(sub, feed)


async def test_offline_reader_catches_up_10000_events_none_missing_none_duplicated(make) -> None:
    feed = make()
    async with feed.subscribe(after="0") as sub:
        (first,) = await feed.publish([event(-1)])
        await take(sub, 1)
        saved = sub.position
    assert saved == first
    sent: list[str] = []
    for start in range(0, 10_000, 500):  # the agent is offline meanwhile
        sent += await feed.publish([event(i) for i in range(start, start + 500)])
    async with feed.subscribe(after=saved) as sub:
        got = await take(sub, 10_000, timeout=120)
        positions = [e.position for e in got]
        assert len(set(positions)) == 10_000  # none duplicated
        assert positions == sent  # none missing, in order
        await nothing_more(sub, feed)


async def test_next_batch_returns_what_is_available(make) -> None:
    feed = make()
    sent = await feed.publish([event(i) for i in range(7)])
    async with feed.subscribe(after="0") as sub:
        async with asyncio.timeout(30):
            got = await sub.next_batch(5)
            got += await sub.next_batch(5)
        assert [e.position for e in got] == sent
        with pytest.raises(InvalidInputError):
            await sub.next_batch(0)


@pytest.mark.parametrize("bad", ["abc", "1-2-3", "-1", "", " 1-0", "1.5", "1-", f"{2**64}-0", "0x10", "+"])
async def test_malformed_positions_are_refused(make, bad) -> None:
    feed = make()
    with pytest.raises(InvalidStreamIdError):
        feed.subscribe(after=bad)
    with pytest.raises(InvalidStreamIdError):
        await feed.read(bad)


async def test_position_from_the_future_is_refused(make) -> None:
    feed = make()
    (last,) = await feed.publish([event(0)])
    ms, seq = parse_position(last)
    for future in (f"{ms}-{seq + 1}", f"{ms + 60_000}-0", f"{2**64 - 1}-{2**64 - 1}"):
        with pytest.raises(InvalidStreamIdError, match="future"):
            await feed.read(future)
        sub = feed.subscribe(after=future)
        with pytest.raises(InvalidStreamIdError, match="future"):
            await sub.start()
        await sub.aclose()
    assert [e.position for e in await feed.read(f"{ms}-{seq}")] == []


async def test_trimmed_position_raises_gap_exactly_when_events_were_lost(make) -> None:
    feed = make(maxlen=10)
    sent: list[str] = []
    for i in range(40):
        sent += await feed.publish([event(i)])
    kept = await feed.read("0", limit=100)
    assert 10 <= len(kept) <= 11  # the cap, plus the slack of max(1, maxlen // 100)
    assert [e.position for e in kept] == sent[-len(kept):]
    first = sent.index(kept[0].position)
    # resuming right after the newest trimmed event loses nothing
    assert [e.position for e in await feed.read(sent[first - 1], limit=100)] == sent[first:]
    with pytest.raises(ChangeFeedGapError) as info:
        await feed.read(sent[first - 2])
    assert info.value.after == sent[first - 2] and info.value.first_available == kept[0].position
    sub = feed.subscribe(after=sent[0])
    with pytest.raises(ChangeFeedGapError):
        await sub.start()
    await sub.aclose()
    async with feed.subscribe(after="0") as sub:  # "0": everything kept, never a gap
        assert [e.position for e in await take(sub, len(kept))] == [e.position for e in kept]


async def test_reader_that_falls_behind_the_cap_gets_a_gap_or_every_event(make) -> None:
    """In process, a reader more than the cap behind has lost events: a gap. On Redis a live
    reader already holds them (pub/sub delivered them to its connection): all of them, in order."""
    feed = make(maxlen=10)
    await feed.publish([event(0)])
    async with feed.subscribe(after="0") as sub:
        await take(sub, 1)
        sent = [p for i in range(1, 40) for p in await feed.publish([event(i)])]
        if isinstance(feed, InMemoryChangeFeed):
            with pytest.raises(ChangeFeedGapError):
                await take(sub, 39)
        else:
            assert [e.position for e in await take(sub, 39)] == sent


async def test_aclose_ends_a_waiting_iteration(make) -> None:
    feed = make()
    sub = feed.subscribe()
    await sub.start()

    async def drain() -> list[ChangeEvent]:
        return [e async for e in sub]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    await sub.aclose()
    async with asyncio.timeout(10):
        assert await task == []


async def test_bad_events_are_refused_and_nothing_is_published(make) -> None:
    feed = make()
    with pytest.raises(InvalidInputError):
        await feed.publish([event(0), {"id": "x"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        await feed.publish(event(0))  # type: ignore[arg-type]
    assert await feed.read("0") == []
    for kwargs in (
        {"op": "merge"}, {"id": ""}, {"namespace": ""}, {"origin": 3}, {"user_id": ""},
        {"updated_at": datetime(2024, 1, 1)}, {"memory_type": ""},
    ):
        fields = {"id": "x", "op": "upsert", "namespace": "n", "user_id": None, "memory_type": "episodic",
                  "updated_at": T0, "origin": "a", **kwargs}
        with pytest.raises(InvalidInputError):
            ChangeEvent(**fields)


def test_event_times_are_converted_to_utc() -> None:
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert ChangeEvent("x", "upsert", "n", None, "episodic", local, "a").updated_at == T0


# --- hostile input: the same typed error on every feed -----------------------------------------

ODD = ["\x00", "a\x00b", " ", "\t", "\u2028", "\ufeff", "🙂\u200d🙂", "x" * 5000, '\\u0000"', "%00"]
NOT_TEXT = ["\ud800", "a\udfffb"]


def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


async def test_odd_strings_round_trip_through_read_and_subscribe(make) -> None:
    feed = make()
    events = [ChangeEvent(s, "upsert", s, s, s, T0, s) for s in ODD]
    async with feed.subscribe(after="0", namespace="\x00") as sub:
        positions = await feed.publish(events)
        (live,) = await take(sub, 1)
    assert (live.id, live.position) == ("\x00", positions[0])
    read = await feed.read("0")
    assert [(e.id, e.namespace, e.user_id, e.memory_type, e.origin) for e in read] == [(s,) * 5 for s in ODD]


@pytest.mark.parametrize("field", ["id", "namespace", "user_id", "memory_type", "origin"])
@pytest.mark.parametrize("bad", [*NOT_TEXT, "", 5, True, b"x"])
def test_an_event_field_that_cannot_be_stored_is_refused(field, bad) -> None:
    fields = {"id": "x", "op": "upsert", "namespace": "n", "user_id": None, "memory_type": "episodic",
              "updated_at": T0, "origin": "a", field: bad}
    with pytest.raises(InvalidInputError) as info:
        ChangeEvent(**fields)
    assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize(
    "when",
    [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2024, 1, 1), "2024-01-01T00:00:00+00:00",
     1_700_000_000, None],
)
def test_an_event_time_that_is_not_an_aware_datetime_in_range_is_refused(when) -> None:
    with pytest.raises(InvalidInputError) as info:
        ChangeEvent("x", "upsert", "n", None, "episodic", when, "a")
    assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize("limit", [0, True, 1.5, float("nan"), "3", None, MAX_LIMIT + 1, 10**400])
async def test_hostile_read_limits(make, limit) -> None:
    feed = make()
    await feed.publish([event(0)])
    with pytest.raises(InvalidInputError) as info:
        await feed.read("0", limit=limit)
    assert_typed(info.value, InvalidInputError)
    assert len(await feed.read("0", limit=MAX_LIMIT)) == 1


async def test_read_checks_the_position_first_and_latest_reads_nothing(make) -> None:
    feed = make()
    await feed.publish([event(0)])
    with pytest.raises(InvalidStreamIdError):
        await feed.read("abc", limit=0)  # both wrong: the position is reported on every feed
    assert await feed.read("$") == []
    assert await feed.read(None) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [*NOT_TEXT, "", 5, b"ns"])
async def test_hostile_subscription_filters(make, bad) -> None:
    feed = make()
    for kwargs in ({"namespace": bad}, {"exclude_origin": bad}):
        with pytest.raises(InvalidInputError) as info:
            feed.subscribe(**kwargs)
        assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize("limit", [0, True, 1.5, None])
async def test_hostile_batch_sizes(make, limit) -> None:
    feed = make()
    await feed.publish([event(0)])
    async with feed.subscribe(after="0") as sub:
        with pytest.raises(InvalidInputError):
            await sub.next_batch(limit)
        assert [e.id for e in await sub.next_batch(10**400)] == ["rec-0"]  # more than available


@pytest.mark.parametrize("maxlen", [0, -1, True, 1.5, "10", None, float("inf")])
def test_hostile_maxlen(make, maxlen) -> None:
    with pytest.raises(InvalidInputError) as info:
        make(maxlen=maxlen)
    assert_typed(info.value, InvalidInputError)


async def test_every_feed_trims_with_the_same_slack(make) -> None:
    """``maxlen=10``: 1% is 0, so both feeds keep one extra event (the minimum slack) and trim
    back to exactly 10 on the event after it."""
    feed = make(maxlen=10)
    sent = [p for i in range(11) for p in await feed.publish([event(i)])]
    assert [e.position for e in await feed.read("0", limit=100)] == sent
    sent += await feed.publish([event(11)])
    assert [e.position for e in await feed.read("0", limit=100)] == sent[2:]
    with pytest.raises(ChangeFeedGapError):
        await feed.read(sent[0])


# --- Redis specifics ------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_batch_is_one_script_call_and_the_stream_is_readable_by_other_tools(redis_client) -> None:
    feed = RedisChangeFeed(redis_client, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    await feed.publish([event(0)])  # loads the script
    await redis_client.config_resetstat()
    positions = await feed.publish([event(i, user_id="alice") for i in range(100)])
    stats = await redis_client.info("commandstats")
    scripted = {k: v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")}
    assert scripted == {"cmdstat_evalsha": 1}
    assert stats["cmdstat_xadd"]["calls"] == 100 and stats["cmdstat_publish"]["calls"] == 1
    raw = await redis_client.xrange(feed.key, min=positions[0], max=positions[0])
    assert raw == [(positions[0], {
        "id": "rec-0", "op": "upsert", "namespace": "ns", "user_id": "alice", "memory_type": "episodic",
        "updated_at": "2024-05-01T12:00:00.000000+00:00", "origin": "agent-a",
    })]


@pytest.mark.integration
@pytest.mark.parametrize("decode", [True, False])
async def test_the_live_publish_path_survives_a_script_flush_and_either_reply_decoding(plain_redis_server, decode) -> None:
    """One event at a time goes straight to EVALSHA; a server that lost the script (SCRIPT FLUSH,
    a restart, a failover) gets it loaded again and the event is published once."""
    client = connect(plain_redis_server.url, decode_responses=decode)
    feed = RedisChangeFeed(client, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    try:
        async with feed.subscribe() as sub:
            first = await feed.publish([event(0)])
            await client.script_flush()
            await client.config_resetstat()
            second = await feed.publish([event(1)])
            stats = await client.info("commandstats")
            assert [e.position for e in await take(sub, 2)] == first + second
            assert all(isinstance(p, str) for p in first + second)
            await nothing_more(sub, feed)
        assert stats["cmdstat_xadd"]["calls"] == 1 and stats["cmdstat_publish"]["calls"] == 1
    finally:
        await client.delete(feed.key)
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("prefix", HOSTILE)
async def test_hostile_prefix_touches_only_its_own_stream(redis_client, prefix) -> None:
    tag = uuid.uuid4().hex[:6]
    feed = RedisChangeFeed(redis_client, prefix=f"{tag}{prefix}")
    async with feed.subscribe() as sub:
        (position,) = await feed.publish([event(0)])
        assert (await take(sub, 1))[0].position == position
    keys = [k async for k in redis_client.scan_iter(match=f"{tag}*")]
    assert keys == [f"{tag}{prefix}changes"]


@pytest.mark.integration
async def test_publish_while_redis_is_down_keeps_events_and_sends_them_first_later(tmp_path: Path) -> None:
    server = LocalRedis(dir=tmp_path, modules=False, persistent=False)
    server.start()
    client = connect(server.url, decode_responses=True, socket_timeout=2)
    feed = RedisChangeFeed(client, prefix="p:", max_pending=3)
    memory = Memory(InMemoryBackend(), feed=feed, agent_id="writer")
    try:
        await memory.remember("before the outage", id="r0")
        server.kill()
        # the write succeeds (the backend took it); its event waits
        for i in range(1, 5):
            stored = await memory.remember(f"during the outage {i}", id=f"r{i}")
            assert (await memory.get(stored.id)) is not None
        assert feed.pending == 3 and feed.dropped == 1  # bounded: the oldest went
        with pytest.raises(BackendUnavailableError):
            await feed.flush()
        server.start()
        await memory.remember("after the outage", id="r5")
        assert feed.pending == 0
        # the server restarted empty (no persistence): pending events came out first, in order
        assert [e.id for e in await feed.read("0")] == ["r2", "r3", "r4", "r5"]
    finally:
        await client.aclose()
        server.stop()


@pytest.mark.integration
async def test_resilient_memory_on_redis_keeps_writing_and_announces_after_an_outage(tmp_path: Path) -> None:
    """Redis (Query Engine) dies: the resilient wrapper serves the write from its fallback, the
    write does not fail, its event waits; after a restart on the same port it goes out first."""
    server = LocalRedis(dir=tmp_path / "redis", modules=True, persistent=False)
    server.start()
    env = {"REDIS_URL": server.url, "MEMORY_REDIS_PREFIX": "p:", "MEMORY_AGENT_ID": "w",
           "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3")}
    memory = Memory.from_env(env)
    try:
        await memory.remember("before the outage", id="r0")
        server.kill()
        written = await memory.remember("during the outage", id="r1")
        assert written.id == "r1" and memory.feed.pending == 1
        assert (await memory.search("outage")).degraded is True
        server.start()
        await memory.remember("after the outage", id="r2")
        assert memory.feed.pending == 0
        assert [(e.id, e.origin) for e in await memory.feed.read("0")] == [("r1", "w"), ("r2", "w")]
    finally:
        await memory.aclose()
        server.stop()


@pytest.mark.integration
async def test_subscriber_reconnects_and_catches_up_after_a_restart(tmp_path: Path) -> None:
    server = LocalRedis(dir=tmp_path, modules=False, persistent=True)
    server.start()
    client = connect(server.url, decode_responses=True, retry=Retry(NoBackoff(), 1))
    feed = RedisChangeFeed(client, prefix="p:")
    try:
        async with feed.subscribe(after="0") as sub:
            sent = await feed.publish([event(i) for i in range(3)])
            assert [e.position for e in await take(sub, 3)] == sent
            waiting = asyncio.create_task(take(sub, 4))
            await asyncio.sleep(0.2)
            server.stop()  # SIGTERM: the append-only file keeps the stream
            server.start()
            sent = await feed.publish([event(i) for i in range(3, 7)])
            async with asyncio.timeout(60):
                got = await waiting
            assert [e.position for e in got] == sent
            await nothing_more(sub, feed)
    finally:
        await client.aclose()
        server.stop()


@pytest.mark.integration
async def test_a_subscriber_of_a_reset_stream_gets_a_gap(tmp_path: Path) -> None:
    server = LocalRedis(dir=tmp_path, modules=False, persistent=False)
    server.start()
    client = connect(server.url, decode_responses=True)
    feed = RedisChangeFeed(client, prefix="p:")
    try:
        async with feed.subscribe(after="0") as sub:
            await feed.publish([event(0)])
            await take(sub, 1)
            waiting = asyncio.create_task(take(sub, 1))
            await asyncio.sleep(0.2)
            server.kill()
            server.start()  # empty: the reader's position is now beyond the stream
            with pytest.raises(ChangeFeedGapError):
                async with asyncio.timeout(60):
                    await waiting
    finally:
        await client.aclose()
        server.stop()


@pytest.mark.integration
async def test_cluster_publish_reaches_subscribers_on_every_node(redis_cluster, cluster_client) -> None:
    feed = RedisChangeFeed(cluster_client, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    listeners = []
    for port in redis_cluster.ports:
        node = connect(f"redis://127.0.0.1:{port}", decode_responses=True)
        pubsub = node.pubsub()
        await pubsub.subscribe(feed.channel)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        listeners.append((node, pubsub))
    try:
        (position,) = await feed.publish([event(0)])
        for node, pubsub in listeners:
            async with asyncio.timeout(10):
                message = None
                while message is None:
                    message = await pubsub.get_message(timeout=1)
            assert message["type"] == "message" and position in message["data"]
    finally:
        for node, pubsub in listeners:
            await pubsub.aclose()
            await node.aclose()


# --- Memory announces its changes -----------------------------------------------------------


async def test_two_memories_sharing_a_backend_and_feed_hear_each_other() -> None:
    backend, feed = InMemoryBackend(), InMemoryChangeFeed()
    alice = Memory(backend, feed=feed, agent_id="alice")
    bob = Memory(backend, feed=feed, agent_id="bob")
    async with alice.subscribe() as heard_by_alice, bob.subscribe() as heard_by_bob:
        record = await alice.remember("the deploy key rotates on Fridays", user_id="u1", memory_type="semantic")
        (got,) = await take(heard_by_bob, 1)
        assert (got.id, got.op, got.namespace, got.user_id, got.memory_type, got.origin, got.updated_at) == (
            record.id, "upsert", "default", "u1", "semantic", "alice", record.updated_at
        )
        assert (await bob.get(got.id)).text == record.text
        await bob.remember("noted", id="n1")
        (got,) = await take(heard_by_alice, 1)  # alice's own change was filtered out
        assert got.id == "n1" and got.origin == "bob"


async def test_add_announces_a_batch_in_one_publish_and_delete_only_existing_ids() -> None:
    feed = InMemoryChangeFeed()
    memory = Memory(InMemoryBackend(), feed=feed, agent_id="w")
    records = [MemoryRecord(text=f"t{i}", id=f"r{i}") for i in range(5)]
    stored = await memory.add(records)
    assert [e.id for e in await feed.read("0")] == [f"r{i}" for i in range(5)]
    before = await feed.last_position()
    assert await memory.delete(["r1", "missing", "r3", "r1"]) == 2
    deletes = await feed.read(before)
    assert [(e.id, e.op, e.origin) for e in deletes] == [("r1", "delete", "w"), ("r3", "delete", "w")]
    assert all(e.updated_at >= stored[4].updated_at for e in deletes)  # stamped at the delete
    assert await memory.delete(["missing"]) == 0
    assert await feed.last_position() == deletes[-1].position


async def test_memory_without_feed_cannot_subscribe_and_checks_its_arguments() -> None:
    memory = Memory(InMemoryBackend())
    with pytest.raises(ConfigurationError):
        memory.subscribe()
    await memory.remember("no feed, no announcement")
    with pytest.raises(TypeError):
        Memory(InMemoryBackend(), feed=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Memory(InMemoryBackend(), agent_id=" ")
    assert Memory(InMemoryBackend()).agent_id != Memory(InMemoryBackend()).agent_id


async def test_from_env_builds_the_feed() -> None:
    memory = Memory.from_env({"MEMORY_BACKEND": "inmemory", "MEMORY_AGENT_ID": "agent-7"})
    assert isinstance(memory.feed, InMemoryChangeFeed) and memory.agent_id == "agent-7"
    await memory.aclose()
    memory = Memory.from_env({"MEMORY_BACKEND": "inmemory", "MEMORY_CHANGE_FEED": "0"})
    assert memory.feed is None
    memory = Memory.from_env(
        {"REDIS_URL": "redis://127.0.0.1:1/0", "MEMORY_REDIS_PREFIX": "app:", "MEMORY_CHANGE_FEED_MAXLEN": "500",
         "MEMORY_RESILIENT": "0"}
    )  # nothing connects here
    assert isinstance(memory.feed, RedisChangeFeed)
    assert (memory.feed.key, memory.feed.channel, memory.feed.maxlen) == ("app:changes", "app:changes", 500)
    await memory.aclose()
    with pytest.raises(ConfigurationError):
        Memory.from_env({"MEMORY_BACKEND": "inmemory", "MEMORY_CHANGE_FEED_MAXLEN": "0"})


@pytest.mark.integration
async def test_feed_benchmark_runs_and_counts_catch_up_exactly(plain_redis_server) -> None:
    from primitives.evaluation.bench_feed import run_feed_bench

    report = await run_feed_bench(plain_redis_server.url, rate=200, seconds=0.5, catchup=500)
    assert report["live"]["events"] == report["live"]["received"] == 100
    for path in ("previous", "pubsub_floor"):  # interleaved with the live path, for comparison
        assert report["compare"][path]["events"] == report["compare"][path]["received"] == 100
        assert report["compare"][path]["client_cpu_us_per_publish"] > 0
    assert report["live"]["server_us_per_publish"] > 0 and set(report["load_1min"]) == {"before", "after"}
    catchup = report["catchup"]
    assert (catchup["received"], catchup["missing"], catchup["duplicated"], catchup["in_order"]) == (500, 0, 0, True)


async def test_in_process_feed_trims_in_chunks_and_still_detects_every_gap() -> None:
    """Deleting from the head of the event list costs O(maxlen), so the in-process feed, like the
    Redis one, lets 1% more accumulate and then trims back to exactly ``maxlen``."""
    feed = InMemoryChangeFeed(maxlen=200)  # slack: 2 events
    positions = await feed.publish([event(i) for i in range(202)])
    assert len(await feed.read(START, limit=1000)) == 202  # within the slack: nothing dropped yet
    positions += await feed.publish([event(202)])
    kept = await feed.read(START, limit=1000)
    assert [e.position for e in kept] == positions[3:]  # back to exactly maxlen
    assert [e.id for e in await feed.read(positions[2])] == [e.id for e in kept]  # right after the newest dropped
    with pytest.raises(ChangeFeedGapError):
        await feed.read(positions[1])
    assert all(e.position is not None and e.origin == "agent-a" for e in kept)


@pytest.mark.integration
@pytest.mark.parametrize(
    "kwargs",
    [{"prefix": "\ud800"}, {"prefix": None}, {"prefix": 5}, {"max_pending": 0}, {"max_pending": True},
     {"reconnect_timeout": 0}, {"reconnect_timeout": float("nan")}, {"reconnect_timeout": float("inf")},
     {"reconnect_timeout": "30"}, {"reconnect_timeout": 10**400}],
)
def test_redis_feed_configuration_is_checked(redis_client, kwargs) -> None:
    with pytest.raises(InvalidInputError) as info:
        RedisChangeFeed(redis_client, **kwargs)
    assert_typed(info.value, InvalidInputError)
