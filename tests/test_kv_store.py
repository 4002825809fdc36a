"""One contract suite for the key-value store, run against the in-process twin, a real plain Redis
and a real 3-master Redis Cluster; then Redis-only checks (round trips, key names on the server,
client configuration)."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from primitives.errors import (
    ConfigurationError,
    CorruptValueError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidKeyError,
    InvalidTTLError,
    PrimitivesError,
    SerializationError,
)
from primitives.redis_connection import connect
from primitives.store.kv import MAX_TTL, InMemoryKeyValueStore, KeyValueStore
from primitives.store.kv_redis import RedisKeyValueStore
from primitives.store.serialization import Serializer

HOSTILE = [
    "*", "a*", "?", "[ab]", "[", "]", ":", "a:b", "{tag}", "}{", " ", "a b", "\n", "line\nbreak",
    "\\", "%2A", "%", "é", "漢字", "🙂", "kv:x:y:z", "-", "..",
]


@dataclass
class Harness:
    """A store factory plus raw access to what it stored, per implementation."""

    kind: str
    make: Callable[..., KeyValueStore]
    plant: Callable[[str, bytes], Awaitable[None]]
    raw: Callable[[str], Awaitable[bytes | None]]
    advance: Callable[[float], Awaitable[None]]
    namespace: str


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
async def harness(request: pytest.FixtureRequest, clock: Any) -> AsyncIterator[Harness]:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        stores: list[InMemoryKeyValueStore] = []

        def make(**kwargs: Any) -> KeyValueStore:
            if stores:  # one backing cache per test, as one Redis is shared by several clients
                store = InMemoryKeyValueStore(clock=clock, **{"namespace": namespace, **kwargs})
                store._cache = stores[0]._cache
            else:
                store = InMemoryKeyValueStore(clock=clock, **{"namespace": namespace, **kwargs})
            stores.append(store)
            return store

        async def plant(key: str, data: bytes) -> None:
            make()
            stores[0]._cache[key] = (data, math.inf)

        async def raw(key: str) -> bytes | None:
            make()
            item = stores[0]._cache.get(key)
            return None if item is None else item[0]

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        yield Harness("memory", make, plant, raw, advance, namespace)
        return

    server = request.getfixturevalue("plain_redis_server" if request.param == "redis" else "redis_cluster")
    client = connect(server.url, cluster=request.param == "cluster")

    def make_redis(**kwargs: Any) -> KeyValueStore:
        return RedisKeyValueStore(client, **{"namespace": namespace, **kwargs})

    async def plant_redis(key: str, data: bytes) -> None:
        await client.set(key, data)

    async def raw_redis(key: str) -> bytes | None:
        return await client.get(key)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    try:
        yield Harness(request.param, make_redis, plant_redis, raw_redis, sleep, namespace)
    finally:
        await client.aclose()


# -- basic operations -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value",
    [None, True, 0, -7, 2**62, 1.5, "", "text é 漢 🙂", [1, "a", None], {"a": {"b": [1, 2]}}, {"": 0}],
)
async def test_round_trip(harness: Harness, value: Any) -> None:
    store = harness.make()
    assert await store.set("thing", "id-1", value) is True
    assert await store.get("thing", "id-1") == value
    assert await store.exists("thing", "id-1")


async def test_miss_is_none_and_delete_reports_existence(harness: Harness) -> None:
    store = harness.make()
    assert await store.get("thing", "nope") is None
    assert not await store.exists("thing", "nope")
    assert await store.delete("thing", "nope") is False
    await store.set("thing", "x", {"v": 1})
    assert await store.delete("thing", "x") is True
    assert await store.get("thing", "x") is None
    assert not await store.exists("thing", "x")


async def test_stored_null_and_miss_differ_by_exists(harness: Harness) -> None:
    store = harness.make()
    await store.set("thing", "null", None)
    assert await store.get("thing", "null") is None
    assert await store.exists("thing", "null")


async def test_value_mutated_after_set_is_not_changed_in_store(harness: Harness) -> None:
    store = harness.make()
    value = {"list": [1, 2]}
    await store.set("thing", "m", value)
    value["list"].append(3)
    got = await store.get("thing", "m")
    assert got == {"list": [1, 2]}
    got["list"].append(4)
    assert await store.get("thing", "m") == {"list": [1, 2]}


async def test_json_turns_tuples_into_lists(harness: Harness) -> None:
    store = harness.make()
    await store.set("thing", "t", (1, (2, 3)))
    assert await store.get("thing", "t") == [1, [2, 3]]


async def test_set_nx_writes_only_when_missing(harness: Harness) -> None:
    store = harness.make()
    assert await store.set("lock", "a", "first", nx=True) is True
    assert await store.set("lock", "a", "second", nx=True) is False
    assert await store.get("lock", "a") == "first"
    assert await store.set("lock", "a", "third") is True
    assert await store.get("lock", "a") == "third"


async def test_namespace_per_call_overrides_the_bound_one(harness: Harness) -> None:
    store = harness.make()
    other = f"{harness.namespace}-other"
    await store.set("thing", "x", 1)
    await store.set("thing", "x", 2, namespace=other)
    assert await store.get("thing", "x") == 1
    assert await store.get("thing", "x", namespace=other) == 2
    assert await harness.make(namespace=other).get("thing", "x") == 2
    await store.delete_namespace(other)


# -- TTL --------------------------------------------------------------------------------------

async def test_ttl_conventions(harness: Harness) -> None:
    store = harness.make()
    assert await store.ttl("thing", "missing") is None
    await store.set("thing", "forever", 1)
    assert await store.ttl("thing", "forever") == math.inf
    await store.set("thing", "brief", 1, ttl=100)
    remaining = await store.ttl("thing", "brief")
    assert remaining is not None and 99 < remaining <= 100
    await store.set("thing", "brief", 2)  # a set without ttl clears the expiry, as Redis SET does
    assert await store.ttl("thing", "brief") == math.inf


async def test_set_with_ttl_expires(harness: Harness) -> None:
    store = harness.make()
    await store.set("thing", "short", "v", ttl=0.05)
    await store.set("thing", "long", "v", ttl=600)
    await harness.advance(0.2)
    assert await store.get("thing", "short") is None
    assert not await store.exists("thing", "short")
    assert await store.ttl("thing", "short") is None
    assert await store.get("thing", "long") == "v"


async def test_expire_sets_and_reports(harness: Harness) -> None:
    store = harness.make()
    assert await store.expire("thing", "missing", 10) is False
    await store.set("thing", "x", 1)
    assert await store.expire("thing", "x", 50) is True
    remaining = await store.ttl("thing", "x")
    assert remaining is not None and 49 < remaining <= 50
    assert await store.expire("thing", "x", 0.05) is True
    await harness.advance(0.2)
    assert await store.get("thing", "x") is None


@pytest.mark.parametrize(
    "ttl",
    [0, -1, -0.5, float("nan"), float("inf"), float("-inf"), True, False, "10", b"10", [10], MAX_TTL * 10,
     MAX_TTL + 1, 2**63, 10**400, 1e308],
)
async def test_bad_ttl_is_refused_and_nothing_written(harness: Harness, ttl: Any) -> None:
    store = harness.make()
    with pytest.raises(InvalidTTLError):
        await store.set("thing", "x", 1, ttl=ttl)
    assert not await store.exists("thing", "x")
    with pytest.raises(InvalidTTLError):
        await store.mset("thing", {"x": 1, "y": 2}, ttl=ttl)
    assert await store.mget("thing", ["x", "y"]) == [None, None]
    await store.set("thing", "x", 1)
    with pytest.raises(InvalidTTLError):
        await store.expire("thing", "x", ttl)
    assert await store.ttl("thing", "x") == math.inf


# -- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("part", ["", None, 1, b"bytes", ["x"]])
async def test_bad_key_parts_are_refused(harness: Harness, part: Any) -> None:
    store = harness.make()
    with pytest.raises(InvalidKeyError):
        await store.set("thing", part, 1)
    with pytest.raises(InvalidKeyError):
        await store.get(part, "id")
    if part is not None:  # namespace=None means the store's own namespace
        with pytest.raises(InvalidKeyError):
            await store.get("thing", "id", namespace=part)
        with pytest.raises(InvalidKeyError):
            await store.delete_namespace(part)
        with pytest.raises(InvalidKeyError):
            harness.make(namespace=part)


async def test_hostile_ids_are_distinct_keys(harness: Harness) -> None:
    store = harness.make()
    for i, part in enumerate(HOSTILE):
        await store.set("thing", part, i)
        await store.set(part, "id", -i)  # hostile entity
    for i, part in enumerate(HOSTILE):
        assert await store.get("thing", part) == i
        assert await store.get(part, "id") == -i
    assert await store.mget("thing", HOSTILE) == list(range(len(HOSTILE)))


async def test_glob_in_id_cannot_read_another_key(harness: Harness) -> None:
    store = harness.make()
    await store.set("thing", "abc", "secret")
    for probe in ["*", "a*", "?bc", "[a]bc", "ab?", "a%2A"]:
        assert await store.get("thing", probe) is None
        assert not await store.exists("thing", probe)
        assert await store.delete("thing", probe) is False
    assert await store.get("thing", "abc") == "secret"
    # an entity with a separator cannot reach into another entity's ids
    await store.set("a", "b:c", "one")
    assert await store.get("a:b", "c") is None


async def test_delete_namespace_touches_only_that_namespace(harness: Harness) -> None:
    base = harness.namespace
    victim = harness.make(namespace=base)
    neighbours = [f"{base}*", f"{base}:b", f"{base}b", f"{base}?", f"{base}[x]", f"{base} ", base.upper(), "*"]
    for ns in neighbours:
        await victim.set("thing", "x", ns, namespace=ns)
    # more than one SCAN/UNLINK batch
    await victim.mset("thing", {f"id-{i}": i for i in range(1234)})
    await victim.set("other", "*", "also mine")
    assert await victim.delete_namespace() == 1235
    assert await victim.get("thing", "id-0") is None
    assert await victim.get("other", "*") is None
    for ns in neighbours:
        assert await victim.get("thing", "x", namespace=ns) == ns
    for ns in neighbours:
        assert await victim.delete_namespace(ns) == 1
    assert await victim.delete_namespace() == 0


# -- hostile input: the same typed error on every implementation -----------------------------

#: Strings that are odd but valid key parts: kept exactly, each its own key.
ODD_BUT_VALID = [
    "\x00", "a\x00b", "\t", "  ", "\r\n", "\u2028", "\ufeff", "\U0010ffff", "é" * 300, "x" * 5000, "%00",
    "kv:", "\\*", "🙂\u200d🙂",
]
#: Strings UTF-8 cannot encode (lone surrogates): no store can write them.
NOT_TEXT = ["\ud800", "a\udfffb", "\udc80"]


def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    """``exc`` is the package's typed error ``cls``, a ValueError or TypeError, never a raw one."""
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


async def test_odd_but_valid_key_parts_round_trip(harness: Harness) -> None:
    store = harness.make()
    for i, part in enumerate(ODD_BUT_VALID):
        await store.set("thing", part, i)
        await store.set(part, "id", -i)
        await store.set("thing", "id", part, namespace=part)
    assert await store.mget("thing", ODD_BUT_VALID) == list(range(len(ODD_BUT_VALID)))
    for i, part in enumerate(ODD_BUT_VALID):
        assert await store.get(part, "id") == -i
        assert await store.get("thing", "id", namespace=part) == part
        assert await store.delete_namespace(part) == 1


@pytest.mark.parametrize("part", [*NOT_TEXT, "", True, 0, 1.5, float("nan"), 10**400, b"\xff"])
async def test_a_part_that_cannot_be_a_key_is_an_invalid_key_error_everywhere(harness: Harness, part: Any) -> None:
    store = harness.make()
    calls = [
        lambda: store.set("thing", part, 1),
        lambda: store.set(part, "id", 1),
        lambda: store.set("thing", "id", 1, namespace=part),
        lambda: store.get("thing", part),
        lambda: store.exists("thing", part),
        lambda: store.delete("thing", part),
        lambda: store.ttl("thing", part),
        lambda: store.expire("thing", part, 10),
        lambda: store.mget("thing", ["ok", part]),
        lambda: store.mset("thing", {"ok": 1, part: 2}),
        lambda: store.delete_namespace(part),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            await call()
        assert_typed(info.value, InvalidKeyError)
    with pytest.raises(InvalidKeyError):
        harness.make(namespace=part)
    if part != "":  # an empty prefix is allowed
        with pytest.raises(InvalidKeyError):
            harness.make(prefix=part)
    assert await store.mget("thing", ["ok", "id"]) == [None, None]  # nothing was written


@pytest.mark.parametrize("ids", [None, "ab", b"ab", {"a", "b"}, {"a": 1}, (i for i in "ab"), 7])
async def test_ids_that_are_not_a_list_are_refused(harness: Harness, ids: Any) -> None:
    store = harness.make()
    with pytest.raises(InvalidInputTypeError) as info:
        await store.mget("thing", ids)
    assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize("values", [None, [("a", 1)], "ab", 7])
async def test_values_that_are_not_a_mapping_are_refused(harness: Harness, values: Any) -> None:
    store = harness.make()
    with pytest.raises(InvalidInputTypeError) as info:
        await store.mset("thing", values)
    assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize("nx", [1, 0, "yes", None, 1.0])
async def test_nx_must_be_a_bool(harness: Harness, nx: Any) -> None:
    store = harness.make()
    with pytest.raises(InvalidInputTypeError):
        await store.set("lock", "a", 1, nx=nx)
    assert not await store.exists("lock", "a")


@pytest.mark.parametrize("maxsize", [0, -1, True, 1.5, "10", None, float("inf")])
def test_in_memory_maxsize_must_be_an_int_of_at_least_one(maxsize: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        InMemoryKeyValueStore(maxsize=maxsize)
    assert_typed(info.value, InvalidInputError)


def test_one_max_ttl() -> None:
    import primitives.validation

    assert MAX_TTL is primitives.validation.MAX_TTL == 10**12


# -- serialization ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value",
    [object(), {"a": {1, 2}}, float("nan"), {"x": [float("inf")]}, b"raw", "\ud800", {"k": ["a\udfffb"]}, {"\ud800": 1}],
)
async def test_unserializable_value_is_refused_and_nothing_written(harness: Harness, value: Any) -> None:
    store = harness.make()
    with pytest.raises(SerializationError):
        await store.set("thing", "new", value)
    assert not await store.exists("thing", "new")
    await store.set("thing", "old", "kept")
    with pytest.raises(SerializationError):
        await store.set("thing", "old", value)
    assert await store.get("thing", "old") == "kept"
    with pytest.raises(SerializationError):
        await store.mset("thing", {"m1": 1, "m2": value, "m3": 3})
    assert await store.mget("thing", ["m1", "m2", "m3"]) == [None, None, None]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b'{"a":1}',  # JSON without a header byte
        b"hello",
        b"\xa9not zlib at all",  # compressed flag, broken body
        b"\xa9" + __import__("zlib").compress(b'{"a":1}')[:-3],  # truncated stream
        b"\xa1\xff\xfe",  # invalid UTF-8
        b"\xa1{broken",
        b"\xa1NaN",
        b"\xa7{}",  # unknown format code
        b"\xa2\xd4\x05x",  # msgpack extension type
    ],
)
async def test_corrupt_stored_bytes_raise_and_stay(harness: Harness, data: bytes) -> None:
    store = harness.make()
    key = store.key("thing", "bad")
    await harness.plant(key, data)
    with pytest.raises(CorruptValueError):
        await store.get("thing", "bad")
    with pytest.raises(CorruptValueError):
        await store.mget("thing", ["ok", "bad"])
    assert await harness.raw(key) == data
    assert await store.exists("thing", "bad")


async def test_msgpack_store_round_trip_and_json_reader(harness: Harness) -> None:
    packer = harness.make(serializer=Serializer("msgpack"))
    value = {"bytes": b"\x00\xff", "nested": [1, 2.5, None, True, {"k": "é"}]}
    await packer.set("thing", "mp", value)
    assert await packer.get("thing", "mp") == value
    raw = await harness.raw(packer.key("thing", "mp"))
    assert raw is not None and raw[0] == 0xA2
    # a JSON-configured store reads it too (decoding goes by the header byte)
    assert await harness.make().get("thing", "mp") == value


async def test_large_values_are_stored_compressed(harness: Harness) -> None:
    store = harness.make()
    big = {"text": "memory " * 1000}
    await store.set("thing", "big", big)
    raw = await harness.raw(store.key("thing", "big"))
    assert raw is not None and raw[0] == 0xA9 and len(raw) < 1000
    assert await store.get("thing", "big") == big
    await store.set("thing", "small", "tiny")
    assert (await harness.raw(store.key("thing", "small")))[0] == 0xA1


# -- many keys --------------------------------------------------------------------------------

async def test_mget_mset_order_and_misses(harness: Harness) -> None:
    store = harness.make()
    ids = [f"k{i}" for i in range(100)]
    await store.mset("thing", {i: {"n": n} for n, i in enumerate(ids) if n % 2 == 0})
    got = await store.mget("thing", ids)
    assert got == [{"n": n} if n % 2 == 0 else None for n in range(100)]
    assert await store.mget("thing", []) == []
    await store.mset("thing", {})
    with pytest.raises(InvalidInputError):
        await store.mget("thing", "k1")


async def test_mset_with_ttl_sets_every_expiry(harness: Harness) -> None:
    store = harness.make()
    await store.mset("thing", {"a": 1, "b": 2, "c": 3}, ttl=100)
    for i in "abc":
        remaining = await store.ttl("thing", i)
        assert remaining is not None and 99 < remaining <= 100
    await store.mset("thing", {"a": 1, "b": 2}, ttl=0.05)
    await harness.advance(0.2)
    assert await store.mget("thing", ["a", "b", "c"]) == [None, None, 3]


# -- Redis only ---------------------------------------------------------------------------------

@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the packets every real redis-py asyncio connection writes (one per round trip):
    ``sends[0]``. The connection still sends; only a counter is added."""
    from redis.asyncio.connection import AbstractConnection

    counter = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter


@pytest.mark.integration
async def test_mget_of_100_keys_is_one_round_trip(plain_redis_server: Any, sends: list[int]) -> None:
    client = connect(plain_redis_server.url)
    try:
        store = RedisKeyValueStore(client, namespace=f"rt-{uuid.uuid4().hex[:8]}")
        ids = [f"id:{i}*" for i in range(100)]
        await store.mset("thing", {i: i for i in ids})
        stats = await client.info("commandstats")
        mgets = stats.get("cmdstat_mget", {}).get("calls", 0)
        gets = stats.get("cmdstat_get", {}).get("calls", 0)
        before = sends[0]
        values = await store.mget("thing", ids)
        assert sends[0] - before == 1
        stats = await client.info("commandstats")
        assert values == ids
        assert stats["cmdstat_mget"]["calls"] - mgets == 1
        assert stats.get("cmdstat_get", {}).get("calls", 0) == gets
        before = sends[0]
        await store.mset("thing", {i: 0 for i in ids}, ttl=60)  # MULTI + 100 SET PX + EXEC
        assert sends[0] - before == 1
        assert await store.delete_namespace() == 100
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_cluster_mget_is_one_round_trip_per_node(redis_cluster: Any, sends: list[int]) -> None:
    client = connect(redis_cluster.url, cluster=True)
    try:
        store = RedisKeyValueStore(client, namespace=f"rt-{uuid.uuid4().hex[:8]}")
        ids = [f"id-{i}" for i in range(100)]
        await store.mset("thing", {i: -1 for i in ids})  # opens (and handshakes) a connection per node
        nodes = {client.get_node_from_key(store.key("thing", i)).name for i in ids}
        assert len(nodes) == 3  # the keys really spread over the cluster
        before = sends[0]
        await store.mset("thing", {i: i for i in ids})
        assert sends[0] - before == 3  # mset_nonatomic: one pipeline per node
        before = sends[0]
        assert await store.mget("thing", ids) == ids
        assert sends[0] - before == 3
        before = sends[0]
        await store.mset("thing", {i: i for i in ids}, ttl=60)
        assert sends[0] - before == 3
        assert await store.delete_namespace() == 100
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_keys_on_the_server_follow_the_scheme(plain_redis_server: Any) -> None:
    client = connect(plain_redis_server.url)
    try:
        namespace = f"scheme {uuid.uuid4().hex[:6]}*"
        store = RedisKeyValueStore(client, namespace=namespace)
        for part in HOSTILE:
            await store.set("ent:ity", part, 1)
        keys = [k.decode() async for k in client.scan_iter(match="kv:scheme%20*")]
        assert len(keys) == len(HOSTILE)
        for key in keys:
            assert re.fullmatch(r"kv:[A-Za-z0-9_.~%-]+:[A-Za-z0-9_.~%-]+:[A-Za-z0-9_.~%-]+", key), key
            assert store.keys.split(key)[:2] == (namespace, "ent:ity")
        assert sorted(store.keys.split(k)[2] for k in keys) == sorted(HOSTILE)
        assert await store.delete_namespace() == len(HOSTILE)
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_client_decoding_responses_is_refused(plain_redis_server: Any) -> None:
    client = connect(plain_redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError):
            RedisKeyValueStore(client)
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_custom_prefix_with_glob_characters(plain_redis_server: Any) -> None:
    client = connect(plain_redis_server.url)
    try:
        ns = f"p-{uuid.uuid4().hex[:6]}"
        starred = RedisKeyValueStore(client, namespace=ns, prefix="app*[1]:")
        plain = RedisKeyValueStore(client, namespace=ns, prefix="appX1:")
        await starred.set("thing", "x", 1)
        await plain.set("thing", "x", 2)
        assert await starred.delete_namespace() == 1
        assert await plain.get("thing", "x") == 2
        assert await plain.delete_namespace() == 1
    finally:
        await client.aclose()


async def test_unreachable_server_is_backend_unavailable() -> None:
    from primitives.errors import BackendUnavailableError
    from primitives.tooling.localredis import free_port

    client = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        store = RedisKeyValueStore(client)
        with pytest.raises(BackendUnavailableError):
            await store.get("thing", "x")
        with pytest.raises(BackendUnavailableError):
            await store.set("thing", "x", 1)
        with pytest.raises(BackendUnavailableError):
            await store.mget("thing", ["x", "y"])
        with pytest.raises(BackendUnavailableError):
            await store.delete_namespace()
    finally:
        await client.aclose()
